"""Augmentations that record what they did.

Each sampling augmentation takes an explicit `numpy.random.Generator` and returns
`(output, record)`, `record` mapping the parameter names of `AUG_PARAMS` to floats: exactly the
values used, so LOEV heads can tell which views share (or lack) an augmentation. The `apply_*`
functions are the deterministic operations with explicit parameters.

Audio runs on the mono float32 waveform `[L]` (crop, time stretch, pitch shift, room reverb,
gain, noise, microphone eq and band limit) and then on the features `[C, F, T]`
(time/frequency masking). Images are uint8 `[3, H, W]` tensors (crop, flip), then float
`[3, H, W]` in [0, 1] (colour). Tabular works on a window
(num, num_mask, cat, row_mask) from `raysys.data.features.window_of`.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.signal
import torch
import torchaudio
import torchaudio.functional as AF
import torchvision.transforms.v2.functional as VF

Record = dict[str, float]
TabWindow = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]

# modality -> augmentation name -> recorded parameters (besides `applied`). The batch schema
# has one `aug.<modality>.<name>.<param>` column per entry, always present.
AUG_PARAMS: dict[str, dict[str, tuple[str, ...]]] = {
    "audio": {
        "crop": ("start",),  # segment start / source length
        "time_stretch": ("rate",),  # > 1 = faster (shorter before re-cropping)
        "pitch_shift": ("semitones",),
        "gain": ("db",),
        "noise": ("snr_db",),
        "eq": ("tilt_db", "peak_db", "peak_hz"),  # dB per octave, dB, Hz
        "band": ("highpass_hz", "lowpass_hz"),  # corner frequencies of the band limit
        "reverb": ("rt60", "wet"),  # seconds to -60 dB, share of the reverberant signal
        "time_mask": ("start", "width"),  # fractions of T
        "freq_mask": ("start", "width"),  # fractions of F
    },
    "image": {
        "crop": ("top", "left", "height", "width"),  # fractions of the source H, W
        "flip": (),
        "color": ("brightness", "contrast", "saturation"),  # multiplicative factors
    },
    "tabular": {
        "window": ("start",),  # window offset / number of rows
        "corrupt": ("fraction",),  # share of observed values replaced
    },
}


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def maybe(rng: np.random.Generator, p: float) -> bool:
    """One Bernoulli(p) draw (always consumes one random number, keeping streams aligned)."""
    return bool(rng.random() < p)


# ----------------------------------------------------------------------------------------------
# audio: waveform


def fix_length(wave: torch.Tensor, length: int) -> torch.Tensor:
    """Centre-crop or symmetrically zero-pad the last axis to `length` samples."""
    n = wave.shape[-1]
    if n >= length:
        start = (n - length) // 2
        return wave[..., start : start + length]
    left = (length - n) // 2
    return torch.nn.functional.pad(wave, (left, length - n - left))


def crop(wave: torch.Tensor, length: int, start_frac: float | None) -> tuple[torch.Tensor, int]:
    """`length` samples starting at round(start_frac * (S - length)); None = centre crop.

    Returns the segment (zero-padded when the source is shorter) and the start sample.
    """
    slack = max(0, wave.shape[-1] - length)
    start = slack // 2 if start_frac is None else round(start_frac * slack)
    return fix_length(wave[..., start : start + length], length), start


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> torch.Tensor:
    return torch.hann_window(n_fft)


@functools.lru_cache(maxsize=8)
def _phase_advance(n_fft: int, hop: int) -> torch.Tensor:
    """`[F, 1]`: each STFT bin's expected phase advance per hop."""
    return torch.linspace(0, math.pi * hop, n_fft // 2 + 1)[:, None]


def phase_vocoder(spec: torch.Tensor, rate: float, advance: torch.Tensor) -> torch.Tensor:
    """`torchaudio.functional.phase_vocoder` on a complex `[F, T]` spectrogram, bit-equal to
    it (tests/test_augment.py) at 0.6-0.75x its cost: the angle and magnitude of each input frame
    are taken once, where torchaudio takes them twice per output frame. It is most of the
    decode workers' time when views are stretched or pitch-shifted (docs/benchmarks.md)."""
    if rate == 1.0:
        return spec
    steps = torch.arange(0, spec.shape[-1], rate, dtype=torch.real(spec).dtype)
    alphas = steps % 1.0
    angle = torch.nn.functional.pad(spec.angle(), [0, 2])
    norm = torch.nn.functional.pad(spec.abs(), [0, 2])
    before, after = steps.long(), steps.long() + 1
    angle_0, angle_1 = angle.index_select(-1, before), angle.index_select(-1, after)
    phase = angle_1 - angle_0 - advance
    phase = phase - 2 * math.pi * torch.round(phase / (2 * math.pi))
    phase = torch.cat([angle[..., :1], (phase + advance)[..., :-1]], dim=-1)
    mag = alphas * norm.index_select(-1, after) + (1 - alphas) * norm.index_select(-1, before)
    return torch.polar(mag, torch.cumsum(phase, -1))


def apply_time_stretch(wave: torch.Tensor, rate: float, n_fft: int, hop: int) -> torch.Tensor:
    """Phase-vocoder time stretch (pitch kept): `[L]` -> `[round(L / rate)]`.

    STFT (Hann, n_fft, hop) -> phase_vocoder -> iSTFT.
    Cost ~1.5 ms for 1 s at 16 kHz with n_fft 512, hop 128.
    """
    window = _hann(n_fft)
    spec = torch.stft(wave, n_fft, hop, window=window, pad_mode="constant", return_complex=True)
    stretched = phase_vocoder(spec, rate, _phase_advance(n_fft, hop))
    length = max(1, round(wave.shape[-1] / rate))
    return torch.istft(stretched, n_fft, hop, window=window, length=length)


def time_stretch(
    wave: torch.Tensor,
    rng: np.random.Generator,
    rate_range: tuple[float, float],
    out_length: int,
    n_fft: int = 512,
    hop: int = 128,
) -> tuple[torch.Tensor, Record]:
    """Stretch by a rate ~ U(rate_range), then centre-crop/pad to `out_length`.

    Give a segment of about out_length * max rate samples so that fast views still fill the
    clip. Onsets spaced d apart end up d / rate apart.
    """
    rate = uniform(rng, rate_range)
    return stretch_to(wave, rate, out_length, n_fft, hop), {"rate": rate}


def stretch_to(wave: torch.Tensor, rate: float, out_length: int, n_fft: int = 512,
               hop: int = 128) -> torch.Tensor:
    """Stretch the centre of `wave` by `rate` to `out_length` samples (centre-crop/pad)."""
    # only the centre that survives the final crop is stretched (+ n_fft of context)
    wave = fix_length(wave, min(wave.shape[-1], math.ceil(out_length * rate) + n_fft))
    return fix_length(apply_time_stretch(wave, rate, n_fft, hop), out_length)


@functools.lru_cache(maxsize=512)
def _resampler(orig: int, new: int) -> torchaudio.transforms.Resample:
    return torchaudio.transforms.Resample(orig, new)


def quantised_pitch_ratio(semitones: float, ratio_base: int) -> tuple[int, float]:
    """Frequency ratio 2^(s/12) rounded to k / ratio_base: (k, exact semitones 12 log2(k/base)).

    Resampling k -> base costs O(base) to build a kernel; torchaudio's pitch_shift resamples
    int(sr / ratio) -> sr, whose gcd is tiny, and took ~11 s per 1 s clip here. base=200 keeps
    steps <= 0.09 semitone and resampling at ~1 ms (the kernel is cached per k).
    """
    k = max(1, round(2.0 ** (semitones / 12.0) * ratio_base))
    return k, 12.0 * math.log2(k / ratio_base)


def apply_pitch_shift(
    wave: torch.Tensor, semitones: float, ratio_base: int = 200, n_fft: int = 512, hop: int = 128
) -> tuple[torch.Tensor, float]:
    """Shift pitch by ~`semitones`, keeping length `[L]`; returns (output, exact semitones).

    Stretch by 1/ratio (phase vocoder: length L * ratio), then resample k -> base, which
    divides the length back by ratio and multiplies every frequency by ratio = k / base.
    """
    k, exact = quantised_pitch_ratio(semitones, ratio_base)
    if k == ratio_base:
        return wave, 0.0
    stretched = apply_time_stretch(wave, ratio_base / k, n_fft, hop)
    return fix_length(_resampler(k, ratio_base)(stretched), wave.shape[-1]), exact


def pitch_shift(
    wave: torch.Tensor,
    rng: np.random.Generator,
    semitone_range: tuple[float, float],
    ratio_base: int = 200,
    n_fft: int = 512,
    hop: int = 128,
) -> tuple[torch.Tensor, Record]:
    """Pitch shift by s ~ U(semitone_range) (quantised, see `quantised_pitch_ratio`).

    Records the exact semitones applied: the dominant frequency moves by 2^(s/12).
    """
    out, exact = apply_pitch_shift(wave, uniform(rng, semitone_range), ratio_base, n_fft, hop)
    return out, {"semitones": exact}


def gain(
    wave: torch.Tensor, rng: np.random.Generator, db_range: tuple[float, float]
) -> tuple[torch.Tensor, Record]:
    """Scale by 10^(g/20), g ~ U(db_range) dB: RMS ratio out/in = 10^(g/20). No clipping."""
    db = uniform(rng, db_range)
    return wave * (10.0 ** (db / 20.0)), {"db": db}


def apply_noise(wave: torch.Tensor, snr_db: float, noise: torch.Tensor) -> torch.Tensor:
    """Add `noise` rescaled so that 10 log10(P_signal / P_noise) = snr_db exactly
    (P = mean square). A silent signal stays silent."""
    p_signal = wave.pow(2).mean()
    p_noise = noise.pow(2).mean().clamp_min(1e-20)
    scale = torch.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return wave + scale * noise


def noise(
    wave: torch.Tensor, rng: np.random.Generator, snr_range: tuple[float, float]
) -> tuple[torch.Tensor, Record]:
    """Additive white Gaussian noise at SNR ~ U(snr_range) dB."""
    snr = uniform(rng, snr_range)
    white = torch.from_numpy(rng.standard_normal(wave.shape[-1]).astype(np.float32))
    return apply_noise(wave, snr, white), {"snr_db": snr}


def apply_eq(wave: torch.Tensor, sample_rate: int, tilt_db: float, peak_db: float,
             peak_hz: float) -> torch.Tensor:
    """A different microphone: gain `tilt_db * log2(f / 1 kHz) + peak_db * exp(-x^2 / 2)`
    with `x = log2(f / peak_hz) / 0.5` (a one-octave-wide resonance or notch), applied in the
    frequency domain; length kept. The DC bin keeps its gain at 1 Hz."""
    n = wave.shape[-1]
    f, octaves = _eq_axis(n, sample_rate)
    curve = tilt_db * octaves + peak_db * torch.exp(-0.5 * (torch.log2(f / peak_hz) / 0.5) ** 2)
    return torch.fft.irfft(torch.fft.rfft(wave) * 10.0 ** (curve / 20.0), n)


@functools.lru_cache(maxsize=32)
def _eq_axis(n: int, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(bin frequencies in Hz, floored at 1; octaves from 1 kHz) of an `n`-sample rfft."""
    f = torch.fft.rfftfreq(n, 1.0 / sample_rate).clamp_min(1.0)
    return f, torch.log2(f / 1000.0)


def eq(
    wave: torch.Tensor, rng: np.random.Generator, sample_rate: int,
    tilt_range: tuple[float, float], peak_db_range: tuple[float, float],
    peak_hz_range: tuple[float, float],
) -> tuple[torch.Tensor, Record]:
    """Random spectral tilt and resonance/notch (apply_eq); the peak frequency is drawn
    log-uniformly. Makes the recording channel, which two crops of one file share, useless as
    a contrastive shortcut."""
    tilt, peak = uniform(rng, tilt_range), uniform(rng, peak_db_range)
    lo, hi = (math.log(v) for v in peak_hz_range)
    hz = math.exp(uniform(rng, (lo, hi)))
    return (apply_eq(wave, sample_rate, tilt, peak, hz),
            {"tilt_db": tilt, "peak_db": peak, "peak_hz": hz})


def apply_band(wave: torch.Tensor, sample_rate: int, highpass_hz: float,
               lowpass_hz: float) -> torch.Tensor:
    """A band-limited channel: scipy's 2nd-order Butterworth band-pass between `highpass_hz`
    and `lowpass_hz` (12 dB/octave outside; causal, no clipping); length kept."""
    sos = scipy.signal.butter(2, [highpass_hz, lowpass_hz], btype="bandpass", fs=sample_rate,
                              output="sos")
    out = scipy.signal.sosfilt(sos, wave.numpy().astype(np.float64))
    return torch.from_numpy(out.astype(np.float32))


def band(
    wave: torch.Tensor, rng: np.random.Generator, sample_rate: int,
    highpass_range: tuple[float, float], lowpass_range: tuple[float, float],
) -> tuple[torch.Tensor, Record]:
    """Random band limit (apply_band), corners drawn log-uniformly: what a telephone line, a
    cheap microphone or a lossy codec leaves of the spectrum. Two crops of one recording share
    its band limit; this makes it useless as a contrastive shortcut."""
    hp, lp = (math.exp(uniform(rng, (math.log(lo), math.log(hi))))
              for lo, hi in (highpass_range, lowpass_range))
    return apply_band(wave, sample_rate, hp, lp), {"highpass_hz": hp, "lowpass_hz": lp}


def room_response(rt60: float, sample_rate: int, noise: np.ndarray) -> torch.Tensor:
    """A synthetic room impulse response: `noise` (rt60 * sample_rate draws) under an
    exponential decay reaching -60 dB at `rt60` seconds, scaled to unit energy."""
    t = np.arange(noise.size) / sample_rate
    ir = noise * np.exp(-6.9 * t / rt60)
    return torch.from_numpy((ir / (np.sqrt(np.sum(ir**2)) + 1e-12)).astype(np.float32))


def apply_reverb(wave: torch.Tensor, ir: torch.Tensor, wet: float) -> torch.Tensor:
    """`(1 - wet) * wave + wet * (wave convolved with ir)`, length kept (the tail is cut)."""
    reverberant = AF.fftconvolve(wave, ir)[..., : wave.shape[-1]]
    return (1.0 - wet) * wave + wet * reverberant


def reverb(
    wave: torch.Tensor, rng: np.random.Generator, sample_rate: int,
    rt60_range: tuple[float, float], wet_range: tuple[float, float],
) -> tuple[torch.Tensor, Record]:
    """Another room: a synthetic response with RT60 ~ U(rt60_range) s (room_response) mixed in
    at a share ~ U(wet_range). Two crops of one recording share its room."""
    rt60, wet = uniform(rng, rt60_range), uniform(rng, wet_range)
    noise = rng.standard_normal(max(1, round(rt60 * sample_rate)))
    return apply_reverb(wave, room_response(rt60, sample_rate, noise), wet), {"rt60": rt60,
                                                                              "wet": wet}


# ----------------------------------------------------------------------------------------------
# audio: features [C, F, T]


def _mask_span(rng: np.random.Generator, size: int, max_frac: float) -> tuple[int, int]:
    """(start, width): width ~ U{1..max(1, floor(max_frac * size))}, start uniform."""
    width = int(rng.integers(1, max(1, math.floor(max_frac * size)) + 1))
    width = min(width, size)
    return int(rng.integers(0, size - width + 1)), width


def time_mask(
    feats: torch.Tensor, rng: np.random.Generator, max_frac: float
) -> tuple[torch.Tensor, Record]:
    """Zero frames [start, start + width) of every channel and bin (SpecAugment).

    Records start / T and width / T; round(start * T) recovers the frame indices exactly.
    """
    n = feats.shape[-1]
    start, width = _mask_span(rng, n, max_frac)
    out = feats.clone()
    out[..., start : start + width] = 0.0
    return out, {"start": start / n, "width": width / n}


def freq_mask(
    feats: torch.Tensor, rng: np.random.Generator, max_frac: float
) -> tuple[torch.Tensor, Record]:
    """Zero bins [start, start + width) of every channel and frame; records fractions of F."""
    n = feats.shape[-2]
    start, width = _mask_span(rng, n, max_frac)
    out = feats.clone()
    out[..., start : start + width, :] = 0.0
    return out, {"start": start / n, "width": width / n}


# ----------------------------------------------------------------------------------------------
# image


def sample_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """(top, left, h, w) with area ~ U(scale) * H * W and log aspect ~ U(log ratio), as
    torchvision's RandomResizedCrop: 10 tries, then the largest centred crop within `ratio`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * uniform(rng, scale)
        aspect = math.exp(uniform(rng, log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, min(height, round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        h, w = height, min(width, round(height * ratio[1]))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def random_resized_crop(
    img: torch.Tensor, rng: np.random.Generator, scale: tuple[float, float], size: int
) -> tuple[torch.Tensor, Record]:
    """uint8 `[3, H, W]` -> `[3, size, size]`: crop a sampled box, resize (antialiased)."""
    height, width = img.shape[-2:]
    top, left, h, w = sample_crop_box(rng, height, width, scale)
    out = VF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    record = {"top": top / height, "left": left / width, "height": h / height, "width": w / width}
    return out, record


def hflip(img: torch.Tensor, rng: np.random.Generator | None = None) -> tuple[torch.Tensor, Record]:
    """Mirror left-right (no parameter; `rng` unused, kept for a uniform signature)."""
    return VF.horizontal_flip(img), {}


def apply_color(
    img01: torch.Tensor, brightness: float, contrast: float, sat: float
) -> torch.Tensor:
    """Brightness, then contrast, then saturation (torchvision functional ops, fixed order),
    on float `[3, H, W]` in [0, 1]; results clamp to [0, 1]."""
    out = VF.adjust_brightness(img01, brightness)
    out = VF.adjust_contrast(out, contrast)
    return VF.adjust_saturation(out, sat)


def color_jitter(
    img01: torch.Tensor, rng: np.random.Generator, strength: float
) -> tuple[torch.Tensor, Record]:
    """Each factor ~ U(max(0, 1 - strength), 1 + strength), recorded."""
    bounds = (max(0.0, 1.0 - strength), 1.0 + strength)
    b, c, s = (uniform(rng, bounds) for _ in range(3))
    return apply_color(img01, b, c, s), {"brightness": b, "contrast": c, "saturation": s}


# ----------------------------------------------------------------------------------------------
# tabular


def _pick(rng: np.random.Generator, candidates: np.ndarray, fraction: float) -> np.ndarray:
    """round(fraction * n) of the `candidates` indices, without replacement."""
    k = round(fraction * candidates.size)
    return rng.choice(candidates, size=k, replace=False) if k else candidates[:0]


def corrupt(
    window: TabWindow,
    rng: np.random.Generator,
    fraction_range: tuple[float, float],
    categorical: bool = True,
) -> tuple[TabWindow, Record]:
    """Replace round(f * n_observed) observed numbers with N(0, 1) draws (the standardised
    marginal) and, if `categorical`, round(f * n_known) known category ids with known ids
    drawn from the rows of the same column (possibly the same value); f ~ U(fraction_range).
    Masks are unchanged.
    """
    num, num_mask, cat, row_mask = (a.copy() for a in window)
    f = uniform(rng, fraction_range)
    flat = _pick(rng, np.flatnonzero(num_mask), f)
    num.flat[flat] = rng.standard_normal(flat.size).astype(np.float32)
    if categorical and cat.size:
        known = (cat != 0) & row_mask[:, None]
        chosen = _pick(rng, np.flatnonzero(known), f)
        for j in range(cat.shape[1]):
            rows = chosen[chosen % cat.shape[1] == j] // cat.shape[1]
            if rows.size:
                cat[rows, j] = rng.choice(cat[known[:, j], j], size=rows.size)
    return (num, num_mask, cat, row_mask), {"fraction": f}
