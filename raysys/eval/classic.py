"""Classic hand-crafted features: the no-learning baseline of every evaluation table.

What a practitioner would try before any network (no Ray, no model):
- audio: mean and standard deviation over time of 20 MFCCs and of 40 log-mel bands
  (torchaudio, 25 ms windows, 10 ms hop) of the whole file, and rhythm statistics of its
  spectral flux (the log onset rate, the flux's mean and spread, its autocorrelation at lags
  0.1-1.45 s every 50 ms): 151 numbers. Without the rhythm part a classic tempo probe reads
  nothing (R² -0.007 on the music corpus), with it R² 0.40 (a dedicated estimator on a finer
  mel, experiments/tempo_ceiling.py: 0.47-0.49; docs/learning.md session 18);
- image: the image downsampled to 8x8 RGB (192 numbers) plus an 8-bin histogram per colour
  channel and a 8-bin histogram of gradient magnitudes: 224 numbers;
- logs: per numeric column mean, std, min, max and the share of missing cells, plus the row
  count and, per categorical column, the share of rows holding each of its most common values.

A user's own numbers must beat these for pretraining to be worth it.
"""

from __future__ import annotations

import functools

import numpy as np
import pandas as pd
import torch

N_MFCC, N_MELS, IMAGE_GRID, HIST_BINS, TOP_VALUES = 20, 40, 8, 8, 8
FRAMES_PER_SECOND = 100  # the 10 ms hop
RHYTHM_MAX_LAG = 150  # frames: autocorrelation lags 10, 15, ..., 145


@functools.lru_cache(maxsize=4)
def _mfcc(sample_rate: int):
    import torchaudio

    mel = {"n_fft": 512, "win_length": int(0.025 * sample_rate),
           "hop_length": int(0.010 * sample_rate), "n_mels": N_MELS}
    return (torchaudio.transforms.MFCC(sample_rate, n_mfcc=N_MFCC, melkwargs=mel),
            torchaudio.transforms.MelSpectrogram(sample_rate, **mel))


def spectral_flux(mel_power: torch.Tensor) -> np.ndarray:
    """`[T - 1]`: the summed rise of the log1p-compressed mel bands `[n_mels, T]` from frame to
    frame, the usual onset curve (log1p, not log: silent bands would add noise)."""
    spec = torch.log1p(mel_power)
    return torch.relu(spec[:, 1:] - spec[:, :-1]).sum(0).numpy()


def rhythm_statistics(flux: np.ndarray, threshold: float, max_lag: int) -> np.ndarray:
    """`[3 + len(range(10, max_lag, 5))]`: the log onset rate (flux peaks above `threshold`
    per second), the flux's mean and spread, and its autocorrelation (divided by lag 0) at
    lags 10, 15, ... < `max_lag` frames, zero at lags the clip is too short for."""
    peaks = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > threshold)
    rate = peaks.sum() * FRAMES_PER_SECOND / max(len(flux), 1)
    centred = flux - flux.mean()
    ac = np.correlate(centred, centred, "full")[len(flux) - 1:]
    ac = np.pad(ac / (ac[0] + 1e-9), (0, max(max_lag - len(ac), 0)))
    return np.r_[np.log(rate + 0.1), flux.mean(), flux.std(), ac[10:max_lag:5]]


def audio_features(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """[151]: mean and std over frames of 20 MFCCs and 40 log-mel bands, then the rhythm
    statistics of the whole file's spectral flux (onsets above the flux's mean + 1 std)."""
    mfcc, mel = _mfcc(sample_rate)
    x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    with torch.no_grad():
        coeffs = mfcc(x)
        power = mel(x)
    logmel = torch.log(power + 1e-6)
    parts = [t.mean(-1) for t in (coeffs, logmel)] + [t.std(-1) for t in (coeffs, logmel)]
    flux = spectral_flux(power)
    if len(flux) < 3:  # shorter than 30 ms: no rhythm to read
        flux = np.zeros(3, np.float32)
    rhythm = rhythm_statistics(flux, flux.mean() + flux.std(), RHYTHM_MAX_LAG)
    return np.concatenate([torch.cat(parts).numpy(), rhythm]).astype(np.float32)


def image_features(pixels: np.ndarray) -> np.ndarray:
    """[224]: 8x8 RGB thumbnail (area-averaged), colour histograms, gradient histogram."""
    from PIL import Image

    rgb = np.asarray(pixels, dtype=np.uint8)
    thumb = np.asarray(Image.fromarray(rgb).resize((IMAGE_GRID, IMAGE_GRID), Image.BOX),
                       dtype=np.float32).ravel() / 255.0
    hists = [np.histogram(rgb[..., c], bins=HIST_BINS, range=(0, 256))[0] / rgb[..., c].size
             for c in range(3)]
    grey = rgb.astype(np.float32).mean(-1)
    gy, gx = np.gradient(grey)
    grad = np.histogram(np.hypot(gx, gy), bins=HIST_BINS, range=(0, 128))[0] / grey.size
    return np.concatenate([thumb, *hists, grad]).astype(np.float32)


def log_vocabulary(frame: pd.DataFrame, categorical: list[str]) -> dict[str, list]:
    """The most common values of each categorical column over the whole log table."""
    return {c: frame[c].value_counts().index[:TOP_VALUES].tolist() for c in categorical}


def log_features(rows: pd.DataFrame, numeric: list[str], vocabulary: dict[str, list]
                 ) -> np.ndarray:
    """[5 * numeric + 1 + sum of vocabulary sizes] summary statistics of one entity's rows
    (missing statistics, e.g. the std of one row, are 0)."""
    out: list[float] = []
    for column in numeric:
        v = pd.to_numeric(rows[column], errors="coerce").to_numpy(dtype=np.float64)
        v = np.where(np.isfinite(v), v, np.nan)
        ok = v[~np.isnan(v)]
        stats = ([ok.mean(), ok.std(), ok.min(), ok.max()] if ok.size else [0.0] * 4)
        out += [*stats, 1.0 - ok.size / max(v.size, 1)]
    out.append(float(len(rows)))
    for column, values in vocabulary.items():
        counts = rows[column].value_counts()
        out += [float(counts.get(value, 0)) / max(len(rows), 1) for value in values]
    return np.asarray(out, dtype=np.float32)
