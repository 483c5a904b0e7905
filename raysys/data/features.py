"""Per-modality features: the audio time-frequency stack, image tensors, tabular statistics/windows.

Pure numpy/torch (no Ray): the pipeline calls these inside `map_batches`, one entity at a time.
Every function is deterministic; randomness lives in `raysys.data.augment`.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
import torchaudio
import torchaudio.functional as AF
import torchvision.transforms.v2.functional as VF

from raysys.data.config import DataConfig

# ----------------------------------------------------------------------------------------------
# audio


def clip_samples(cfg: DataConfig) -> int:
    """Samples L of every audio view: round(clip_seconds * sample_rate)."""
    return max(1, round(cfg.clip_seconds * cfg.sample_rate))


def pcen_smoothing_coef(time_constant_s: float, sample_rate: int, hop_length: int) -> float:
    """IIR coefficient s of the PCEN smoother for a time constant in seconds.

    With T = time_constant * sample_rate / hop (in frames), s = (sqrt(1 + 4 T^2) - 1) / (2 T^2),
    the convention of librosa.pcen. Default 0.4 s at 16 kHz / hop 256 gives s ~ 0.039.
    """
    t_frames = time_constant_s * sample_rate / hop_length
    return (math.sqrt(1.0 + 4.0 * t_frames**2) - 1.0) / (2.0 * t_frames**2)


def pcen(
    energy: torch.Tensor, s: float, alpha: float, delta: float, r: float, eps: float
) -> torch.Tensor:
    """Per-channel energy normalisation (Wang et al., "Trainable frontend for robust and
    far-field keyword spotting", ICASSP 2017, eq. 1), over the last (time) axis.

        M[t] = (1 - s) M[t-1] + s E[t],     M[-1] = E[0]   (smoother starts at steady state)
        PCEN[t] = (E[t] / (eps + M[t])^alpha + delta)^r - delta^r

    `energy`: [..., F, T] non-negative (mel power). The smoother runs as one IIR filter via
    torchaudio's lfilter on E - E[0] (zero initial state), then adds E[0] back: cost O(F T).
    """
    e0 = energy[..., :1]
    a = torch.tensor([1.0, s - 1.0], dtype=energy.dtype)
    b = torch.tensor([s, 0.0], dtype=energy.dtype)
    flat = (energy - e0).reshape(-1, energy.shape[-1])
    smooth = AF.lfilter(flat, a, b, clamp=False).reshape(energy.shape) + e0
    return (energy / (eps + smooth) ** alpha + delta) ** r - delta**r


def linear_filterbank(n_fft: int, n_bins: int, f_min: float, f_max: float, sr: int) -> torch.Tensor:
    """Triangular filters equally spaced in Hz, each normalised to sum 1: `[n_fft//2+1, n_bins]`.

    Applied to STFT magnitudes it gives a weighted average magnitude per bin, so log-STFT
    shares the F axis of log-mel while keeping a linear frequency scale.
    """
    fb = AF.linear_fbanks(n_fft // 2 + 1, f_min, f_max, n_bins, sr)
    sums = fb.sum(dim=0)
    if bool((sums <= 0).any()):
        raise ValueError(
            f"audio.n_bins={n_bins}: some linear filters cover no STFT bin (n_fft={n_fft}, "
            f"{f_min}-{f_max} Hz); use fewer bins or a larger n_fft"
        )
    return fb / sums


def log_frequency_filterbank(
    n_fft: int, n_bins: int, f_min: float, bins_per_octave: int, sr: int
) -> torch.Tensor:
    """Unit-height triangles centred at `f_min * 2^(b / bins_per_octave)`: `[n_fft//2+1, n_bins]`.

    Triangle b spans the centres of bins b-1 and b+1. With 12 bins per octave a pitch shift by
    k semitones moves a harmonic sound by k bins: the constant-Q layout a key or pitch needs,
    which mel bins (wider than a semitone below ~1 kHz) blur. Unit height (not unit sum, as
    logstft's) gives a sine the same response at every centre once the triangles are wider
    than the window's main lobe, so the shift is a translation in level too.
    """
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    corners = f_min * 2.0 ** (torch.arange(-1, n_bins + 1, dtype=torch.float64) / bins_per_octave)
    lo, mid, hi = corners[:-2], corners[1:-1], corners[2:]
    rising = (freqs[:, None] - lo) / (mid - lo)
    falling = (hi - freqs[:, None]) / (hi - mid)
    fb = torch.minimum(rising, falling).clamp(min=0.0)
    sums = fb.sum(dim=0)
    if bool((sums <= 0).any()):
        raise ValueError(
            f"audio.logfreq_n_fft={n_fft}: some logfreq filters cover no STFT bin "
            f"(logfreq_f_min={f_min}); use a larger logfreq_n_fft or a higher logfreq_f_min"
        )
    return fb.float()


def standardize_channels(x: torch.Tensor, floor: float) -> torch.Tensor:
    """Each channel of `x [..., C, F, T]` to zero mean and unit std over its (F, T) plane.

    Why: raw log channels sit at very different offsets and scales (log-mel of silence is
    log(log_eps) = -13.8, PCEN lies in [0, ~4]), so a constant dominated the encoder input
    and the channels with small range barely reached the first convolution. Per view and
    channel, the statistics need no data pass and travel with no run: a gain change (a
    constant shift of a log channel) is removed exactly, spectral shape and time structure
    stay. A channel whose std is below `floor` (silence) is divided by `floor`, so an
    all-constant channel becomes all zeros instead of NaN.
    """
    x64 = x.double()  # float64 statistics: a constant channel gives exactly 0, not rounding
    mean = x64.mean(dim=(-2, -1), keepdim=True)
    std = x64.std(dim=(-2, -1), keepdim=True, unbiased=False)
    return ((x64 - mean) / std.clamp(min=floor)).to(x.dtype)


class AudioFeaturizer:
    """Waveform `[L]` (or `[V, L]`) -> float32 stack `[C, F, T]` (or `[V, C, F, T]`).

    Channels (config order, `data.audio.channels`), all on F = `n_bins` bins, T = 1 + L // hop
    frames (centred STFT, Hann window):
      - logmel:  log(MelScale(|STFT|^2) + log_eps)  (HTK mel, as torchaudio.MelSpectrogram)
      - logstft: log(linear_filterbank^T |STFT| + log_eps)
      - pcen:    PCEN of the same mel power (see `pcen`).
      - logfreq: log(log_frequency_filterbank^T |STFT_long| + log_eps), bins a fixed fraction
                 of an octave apart from `logfreq_f_min`, on a second STFT of `logfreq_n_fft`.
    With `data.audio.standardize = "clip"` (default) every channel of every view is then
    standardised over its (F, T) plane (`standardize_channels`); "none" keeps the raw values.
    One STFT is shared by every channel but logfreq. Build once per worker (filterbanks are cached).
    Cost for 1 s at 16 kHz, n_fft 512, hop 256, 3 channels: ~1 ms per view on one CPU thread.
    """

    def __init__(self, cfg: DataConfig) -> None:
        a = cfg.audio
        self.channels = tuple(a.channels)
        self.clip_samples = clip_samples(cfg)
        self.n_bins = a.n_bins
        self.n_frames = 1 + self.clip_samples // a.hop_length
        self.log_eps = a.log_eps
        self.standardize = a.standardize
        self.standardize_floor = a.standardize_floor
        f_max = a.f_max if a.f_max is not None else cfg.sample_rate / 2
        self._stft = torchaudio.transforms.Spectrogram(
            n_fft=a.n_fft, hop_length=a.hop_length, power=None
        )
        self._mel = torchaudio.transforms.MelScale(
            n_mels=a.n_bins, sample_rate=cfg.sample_rate, f_min=a.f_min, f_max=f_max,
            n_stft=a.n_fft // 2 + 1,
        )
        self._linear = linear_filterbank(a.n_fft, a.n_bins, a.f_min, f_max, cfg.sample_rate)
        if "logfreq" in self.channels:
            self._long_stft = torchaudio.transforms.Spectrogram(
                n_fft=a.logfreq_n_fft, hop_length=a.hop_length, power=None
            )
            self._logfreq = log_frequency_filterbank(
                a.logfreq_n_fft, a.n_bins, a.logfreq_f_min, a.logfreq_bins_per_octave,
                cfg.sample_rate,
            )
        s = pcen_smoothing_coef(a.pcen_time_constant, cfg.sample_rate, a.hop_length)
        self._pcen_args = (s, a.pcen_gain, a.pcen_bias, a.pcen_power, a.pcen_eps)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, F, T) of one view."""
        return (len(self.channels), self.n_bins, self.n_frames)

    def __call__(self, wave: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(wave, dtype=torch.float32)
        if x.ndim not in (1, 2) or x.shape[-1] != self.clip_samples:
            raise ValueError(
                f"AudioFeaturizer: waveform must be [L] or [V, L] with L={self.clip_samples} "
                f"(clip_seconds * sample_rate), got shape {tuple(x.shape)}"
            )
        magnitude = self._stft(x).abs()  # [..., n_freqs, T]
        mel_power: torch.Tensor | None = None
        out = []
        for name in self.channels:
            if name in ("logmel", "pcen") and mel_power is None:
                mel_power = self._mel(magnitude.pow(2.0))
            if name == "logmel":
                out.append(torch.log(mel_power + self.log_eps))
            elif name == "logstft":
                binned = torch.einsum("...ft,fb->...bt", magnitude, self._linear)
                out.append(torch.log(binned + self.log_eps))
            elif name == "logfreq":
                long = self._long_stft(x).abs()
                binned = torch.einsum("...ft,fb->...bt", long, self._logfreq)
                out.append(torch.log(binned + self.log_eps))
            else:
                out.append(pcen(mel_power, *self._pcen_args))
        stack = torch.stack(out, dim=-3).float()
        if self.standardize == "clip":
            stack = standardize_channels(stack, self.standardize_floor)
        return stack


# ----------------------------------------------------------------------------------------------
# image

IMAGENET_MEAN = (0.485, 0.456, 0.406)  # per-channel RGB mean of ImageNet, pixel values in [0, 1]
IMAGENET_STD = (0.229, 0.224, 0.225)


def image_chw(img: np.ndarray) -> torch.Tensor:
    """uint8 `[H, W, 3]` -> uint8 tensor `[3, H, W]` (a view when writable), clear errors."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or (
        img.shape[2] != 3
    ):
        got = (type(img).__name__, getattr(img, "dtype", None), getattr(img, "shape", None))
        raise ValueError(f"image must be a uint8 numpy array [H, W, 3], got {got}")
    if img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"image has an empty side: shape {img.shape}")
    # Decoded images may be read-only views (PIL buffers): copy only then.
    return torch.from_numpy(np.require(img, requirements=("C", "W"))).permute(2, 0, 1)


def resize_centre_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize (antialiased bilinear) so the shorter side is `size`, then centre-crop `size^2`."""
    x = VF.resize(x, [size], antialias=True)
    return VF.center_crop(x, [size, size])


def normalize_image(x01: torch.Tensor) -> torch.Tensor:
    """float `[3, H, W]` in [0, 1] -> (x - IMAGENET_MEAN) / IMAGENET_STD, float32."""
    return VF.normalize(x01.float(), list(IMAGENET_MEAN), list(IMAGENET_STD))


def image_to_tensor(img: np.ndarray, size: int) -> torch.Tensor:
    """Evaluation preprocessing: uint8 `[H, W, 3]` -> float32 `[3, size, size]`, normalised.

    Shorter side resized to `size`, centre crop, scaled to [0, 1], ImageNet mean/std.
    """
    x = resize_centre_crop(image_chw(img), size)
    return normalize_image(VF.to_dtype(x, torch.float32, scale=True))


# ----------------------------------------------------------------------------------------------
# tabular


@dataclass
class Moments:
    """count, mean and M2 = sum (x - mean)^2 of the finite values of one numeric column.

    Partials merge exactly (Chan et al. 1979): with d = mean_b - mean_a, n = n_a + n_b,
    mean = mean_a + d n_b / n,  M2 = M2_a + M2_b + d^2 n_a n_b / n.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @staticmethod
    def of(values: np.ndarray) -> Moments:
        x = np.asarray(values, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size == 0:
            return Moments()
        mean = float(x.mean())
        return Moments(int(x.size), mean, float(((x - mean) ** 2).sum()))

    def merge(self, other: Moments) -> Moments:
        n = self.count + other.count
        if n == 0:
            return Moments()
        d = other.mean - self.mean
        mean = self.mean + d * other.count / n
        m2 = self.m2 + other.m2 + d * d * self.count * other.count / n
        return Moments(n, mean, m2)

    @property
    def std(self) -> float:
        """Population std; 1.0 for an empty or constant column (so standardising gives 0)."""
        if self.count == 0:
            return 1.0
        std = math.sqrt(self.m2 / self.count)
        return std if std > 1e-12 else 1.0


def _infer_columns(df: pd.DataFrame, exclude: Sequence[str]) -> tuple[list[str], list[str]]:
    numeric, categorical = [], []
    for col in df.columns:
        if col in exclude:
            continue
        is_num = pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])
        (numeric if is_num else categorical).append(str(col))
    return numeric, categorical


def _category_counts(values: pd.Series) -> dict[str, int]:
    counts = values.dropna().astype(str).value_counts(sort=False)
    return {str(k): int(v) for k, v in counts.items()}


@dataclass
class TabularStats:
    """Standardisation statistics and category vocabularies of the log table.

    Built per block with `from_frame` and combined with `merge` (associative, exact), so the
    pipeline can compute it in one pass over Ray Data blocks. Saved with the run as JSON
    (`to_dict`). Memory: O(numeric columns + distinct categories) — category counts are kept
    in full so that merges stay exact; the vocabulary is cut to `max_vocab` only when used.
    """

    numeric: dict[str, Moments]
    categories: dict[str, dict[str, int]]
    max_vocab: int = 1000
    _vocabs: dict[str, dict[str, int]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(
        cls,
        df: pd.DataFrame,
        numeric_cols: Sequence[str] | None = None,
        categorical_cols: Sequence[str] | None = None,
        *,
        max_vocab: int = 1000,
        exclude: Sequence[str] = ("key", "time"),
    ) -> TabularStats:
        """Statistics of one block. Columns default to dtype inference (numbers -> numeric,
        everything else -> categorical) minus `exclude`."""
        if numeric_cols is None or categorical_cols is None:
            inferred_num, inferred_cat = _infer_columns(df, exclude)
            numeric_cols = inferred_num if numeric_cols is None else numeric_cols
            categorical_cols = inferred_cat if categorical_cols is None else categorical_cols
        absent = [c for c in [*numeric_cols, *categorical_cols] if c not in df.columns]
        if absent:
            raise ValueError(f"TabularStats.from_frame: columns {absent} not in {list(df.columns)}")
        numeric = {c: Moments.of(_numeric_values(df[c])) for c in numeric_cols}
        categories = {c: _category_counts(df[c]) for c in categorical_cols}
        return cls(numeric, categories, max_vocab)

    def merge(self, other: TabularStats) -> TabularStats:
        """Statistics of the union of both blocks' rows."""
        if (set(self.numeric), set(self.categories)) != (
            set(other.numeric), set(other.categories)
        ):
            raise ValueError(
                f"TabularStats.merge: column sets differ: numeric {list(self.numeric)} vs "
                f"{list(other.numeric)}, categorical {list(self.categories)} vs "
                f"{list(other.categories)}"
            )
        numeric = {c: m.merge(other.numeric[c]) for c, m in self.numeric.items()}
        categories = {c: dict(Counter(v) + Counter(other.categories[c]))
                      for c, v in self.categories.items()}
        return TabularStats(numeric, categories, min(self.max_vocab, other.max_vocab))

    @staticmethod
    def merge_all(parts: Iterable[TabularStats]) -> TabularStats:
        parts = list(parts)
        if not parts:
            raise ValueError("TabularStats.merge_all: no partial statistics given")
        return functools.reduce(TabularStats.merge, parts)

    @property
    def numeric_columns(self) -> list[str]:
        return list(self.numeric)

    @property
    def categorical_columns(self) -> list[str]:
        return list(self.categories)

    def vocab(self, column: str) -> dict[str, int]:
        """value -> id in 1..max_vocab, most frequent first (ties by value); 0 = unknown."""
        if column not in self._vocabs:
            ranked = sorted(self.categories[column].items(), key=lambda kv: (-kv[1], kv[0]))
            self._vocabs[column] = {v: i + 1 for i, (v, _) in enumerate(ranked[: self.max_vocab])}
        return self._vocabs[column]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (saved with the run)."""
        return {
            "max_vocab": self.max_vocab,
            "numeric": {c: [m.count, m.mean, m.m2] for c, m in self.numeric.items()},
            "categories": {c: dict(v) for c, v in self.categories.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TabularStats:
        try:
            numeric = {c: Moments(int(n), float(mu), float(m2))
                       for c, (n, mu, m2) in data["numeric"].items()}
            categories = {c: {str(k): int(v) for k, v in counts.items()}
                          for c, counts in data["categories"].items()}
            return cls(numeric, categories, int(data["max_vocab"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"TabularStats.from_dict: malformed statistics ({e!r})") from e


def _numeric_values(column: pd.Series) -> np.ndarray:
    """float64 values; strings that are not numbers become NaN (and are then masked)."""
    if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)


class EncodedRows(NamedTuple):
    """One entity's log rows, time-ordered and encoded: num float32 `[N, Fn]` (standardised,
    0 where masked), num_mask bool `[N, Fn]` (observed and finite), cat int64 `[N, Fc]`."""

    num: np.ndarray
    num_mask: np.ndarray
    cat: np.ndarray


def time_order(rows: pd.DataFrame) -> np.ndarray:
    """Row positions ordered by `time` (stable, missing times last); identity without `time`."""
    if "time" not in rows.columns:
        return np.arange(len(rows))
    t = rows["time"].to_numpy()
    if t.dtype.kind in "iufmM":  # numpy sorts NaN / NaT last
        return np.argsort(t, kind="stable")
    return np.asarray(rows["time"].reset_index(drop=True).sort_values(
        kind="stable", na_position="last").index)


def _category_ids(values: np.ndarray, vocab: dict[str, int]) -> np.ndarray:
    """Object array -> ids; None/NaN and unseen values -> 0. O(N) dict look-ups."""
    def one(v: object) -> int:
        if v is None or (isinstance(v, float) and v != v):
            return 0
        return vocab.get(v if isinstance(v, str) else str(v), 0)

    return np.fromiter((one(v) for v in values), dtype=np.int64, count=len(values))


def encode_rows(
    rows: pd.DataFrame, stats: TabularStats, positions: np.ndarray | None = None
) -> EncodedRows:
    """Standardise numbers and encode categories of the rows at `positions` (default: all,
    ordered by `time`). A stats column absent from `rows` is fully masked / unknown; extra
    columns are ignored. Cost: O(len(positions) * (Fn + Fc)) plus one column read each.
    """
    idx = time_order(rows) if positions is None else np.asarray(positions)
    n = idx.size
    num = np.zeros((n, len(stats.numeric)), dtype=np.float32)
    mask = np.zeros((n, len(stats.numeric)), dtype=bool)
    for j, (col, m) in enumerate(stats.numeric.items()):
        if col in rows.columns:
            x = _numeric_values(rows[col])[idx]
            finite = np.isfinite(x)
            num[finite, j] = (x[finite] - m.mean) / m.std
            mask[:, j] = finite
    cat = np.zeros((n, len(stats.categories)), dtype=np.int64)
    for j, col in enumerate(stats.categories):
        if col in rows.columns:
            cat[:, j] = _category_ids(rows[col].to_numpy(dtype=object)[idx], stats.vocab(col))
    return EncodedRows(num, mask, cat)


def max_window_offset(n_rows: int, window: int) -> int:
    """Largest valid crop offset: max(0, n_rows - window)."""
    return max(0, n_rows - window)


def window_of(
    rows: EncodedRows, window: int, offset: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows [offset, offset + window) padded to `window`: (num, num_mask, cat, row_mask)."""
    n = rows.num.shape[0]
    if not 0 <= offset <= max_window_offset(n, window):
        raise ValueError(
            f"tabular window offset {offset} out of range [0, {max_window_offset(n, window)}] "
            f"for {n} rows and window {window}"
        )
    take = min(window, n - offset)
    num = np.zeros((window, rows.num.shape[1]), dtype=np.float32)
    num_mask = np.zeros((window, rows.num.shape[1]), dtype=bool)
    cat = np.zeros((window, rows.cat.shape[1]), dtype=np.int64)
    row_mask = np.zeros(window, dtype=bool)
    num[:take] = rows.num[offset : offset + take]
    num_mask[:take] = rows.num_mask[offset : offset + take]
    cat[:take] = rows.cat[offset : offset + take]
    row_mask[:take] = True
    return num, num_mask, cat, row_mask


def tabular_window(
    rows_df: pd.DataFrame, stats: TabularStats, window: int, offset: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A fixed-length row window of one entity's logs.

    Returns num float32 `[W, Fn]` (standardised, 0 where masked), num_mask bool `[W, Fn]`
    (NaN/inf/missing -> False), cat int64 `[W, Fc]` (ids from 1, 0 = missing/unknown/padding),
    row_mask bool `[W]` (False = padding). Rows are ordered by `time` when that column exists;
    `offset` (0 <= offset <= max(0, N - W)) picks which window, so views can differ.
    """
    return window_of(encode_rows(rows_df, stats), window, offset)
