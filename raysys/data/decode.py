"""Per-record decoding: audio bytes -> mono float32 waveform, image bytes -> uint8 RGB, log rows.

Pure functions (no Ray), called per row inside Ray Data `map_batches`. Every failure raises
`DecodeError` whose `reason` is one of the short fixed strings below (what the quarantine
table records and tests assert); `detail` carries the underlying library message.

Audio: WAV, FLAC and OGG/Vorbis through soundfile (libsndfile; `torchaudio.load` would need
FFmpeg), resampled with torchaudio's windowed-sinc resampler, or a polyphase filter for rates
whose sinc kernel would be huge (`resample`). Images: anything PIL reads, verified and fully
loaded so truncated files fail here and not later.
"""

from __future__ import annotations

import functools
import io
import struct
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from raysys.data import fs

EMPTY_FILE = "empty file"
FILE_NOT_FOUND = "file not found"
READ_ERROR = "read error"
NOT_REGULAR_FILE = "not a regular file"
READ_TIMEOUT = "read timeout"
READ_TIMEOUT_S = 60.0  # default limit of one read attempt (`data.read_timeout_s`)
NOT_AUDIO = "not a WAV/FLAC/OGG file"
UNSUPPORTED_AUDIO = "unsupported audio format"
CORRUPT_AUDIO_HEADER = "corrupt audio header"
CORRUPT_AUDIO_DATA = "corrupt audio data"
TRUNCATED_AUDIO = "truncated audio"
NO_SAMPLES = "no audio samples"
NON_FINITE_AUDIO = "non-finite audio samples"
NOT_IMAGE = "not an image file"
CORRUPT_IMAGE_HEADER = "corrupt image header"
CORRUPT_IMAGE_DATA = "corrupt image data"
TRUNCATED_IMAGE = "truncated image"
IMAGE_TOO_LARGE = "image too large"

_IMAGE_SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")


class DecodeError(Exception):
    """A record that cannot be decoded. `reason` is short and fixed, `detail` is free text."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AudioInfo:
    """What the file said about itself (before resampling / cropping)."""

    format: str  # WAV | FLAC | OGG
    subtype: str  # e.g. PCM_16, VORBIS
    source_rate: int
    channels: int
    frames: int  # frames decoded, at source_rate

    @property
    def duration_s(self) -> float:
        return self.frames / self.source_rate


def sniff_audio(data: bytes) -> str:
    """Container format from the magic bytes; DecodeError for anything but WAV/FLAC/OGG."""
    if data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"fLaC":
        return "FLAC"
    if data[:4] == b"OggS":
        return "OGG"
    if data[:3] == b"ID3" or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0):
        raise DecodeError(UNSUPPORTED_AUDIO, "MP3 (supported: WAV, FLAC, OGG)")
    if data[:4] == b"FORM" or data[4:8] == b"ftyp":
        raise DecodeError(UNSUPPORTED_AUDIO, "AIFF/MP4 (supported: WAV, FLAC, OGG)")
    raise DecodeError(NOT_AUDIO, f"starts with {data[:12]!r}")


def check_wav_complete(data: bytes) -> None:
    """Raise TRUNCATED_AUDIO when the RIFF `data` chunk claims more bytes than the file holds
    (libsndfile silently returns the shorter signal). Chunks are walked while their ids look
    like ids; anything stranger is left to libsndfile to reject."""
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        available = len(data) - pos - 8
        if chunk == b"data":
            if size not in (0, 0xFFFFFFFF) and size > available:  # 0 / -1: streaming writers
                raise DecodeError(TRUNCATED_AUDIO, f"data chunk {size} B, file holds {available}")
            return
        if not all(32 <= c < 127 for c in chunk) or size > available:
            return
        pos += 8 + size + (size & 1)


def _read_soundfile(data: bytes, container: str) -> tuple[np.ndarray, AudioInfo]:
    """All frames as float32 [frames, channels] plus the file's info."""
    try:
        handle = sf.SoundFile(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError, ValueError) as e:
        raise DecodeError(CORRUPT_AUDIO_HEADER, str(e)) from None
    with handle:
        declared, rate, channels = handle.frames, handle.samplerate, handle.channels
        subtype = handle.subtype
        try:
            frames = handle.read(dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError, ValueError) as e:
            # A truncated FLAC also lands here ("decoder lost sync"): libsndfile cannot tell.
            raise DecodeError(CORRUPT_AUDIO_DATA, str(e)) from None
    if rate <= 0:
        raise DecodeError(CORRUPT_AUDIO_HEADER, f"sample rate {rate}")
    if len(frames) < declared:
        raise DecodeError(TRUNCATED_AUDIO, f"decoded {len(frames)} of {declared} frames")
    info = AudioInfo(container, subtype, int(rate), int(channels), len(frames))
    return frames, info


# torchaudio's sinc kernel has about up * down taps for the reduced ratio up/down: fine for the
# usual rates (44100 -> 16000: 160 * 441), GBs for rates sharing no factor with the target
# (8001 -> 16000: 16000 * 8001). Above RESAMPLE_TORCH_TAPS a polyphase filter of
# 20 * max(up, down) + 1 taps (scipy's resample_poly design) is used instead, and factors above
# RESAMPLE_MAX_FACTOR are replaced by the closest fraction below it (relative error < 1e-9).
RESAMPLE_TORCH_TAPS = 1_000_000
RESAMPLE_MAX_FACTOR = 50_000


@functools.lru_cache(maxsize=64)
def resample_factors(source_rate: int, target_rate: int) -> tuple[int, int]:
    """(down, up): up / down = target / source reduced, each factor <= RESAMPLE_MAX_FACTOR
    (else the closest such fraction)."""
    if source_rate <= 0 or target_rate <= 0:
        raise ValueError(f"sample rates must be > 0 (got {source_rate} -> {target_rate})")
    ratio = Fraction(target_rate, source_rate)
    if max(ratio.numerator, ratio.denominator) > RESAMPLE_MAX_FACTOR:
        cap = RESAMPLE_MAX_FACTOR if ratio < 1 else max(1, int(RESAMPLE_MAX_FACTOR / ratio))
        ratio = ratio.limit_denominator(cap)
    return ratio.denominator, max(1, ratio.numerator)


@functools.lru_cache(maxsize=16)
def _torch_resampler(down: int, up: int) -> Any:
    """torchaudio's Resample for a rate pair (caches its sinc kernel). torch is imported here,
    not at module level: the archive's table checks import this module before Ray starts and
    should not pay for torch."""
    import torchaudio

    return torchaudio.transforms.Resample(down, up)


@functools.lru_cache(maxsize=16)
def _polyphase_filter(down: int, up: int) -> np.ndarray:
    """The low-pass FIR of `scipy.signal.resample_poly` (Kaiser 5.0, 10 zero crossings)."""
    from scipy.signal import firwin

    width = max(up, down)
    taps = firwin(20 * width + 1, 1.0 / width, window=("kaiser", 5.0))
    taps.flags.writeable = False
    return taps


def resample(wave: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of a 1-D float32 signal with bounded memory for any rates.

    Kernels are cached per rate pair (`_torch_resampler`, `_polyphase_filter`); the filter never
    holds more than RESAMPLE_TORCH_TAPS or 20 * RESAMPLE_MAX_FACTOR + 1 taps. Output length:
    ceil(len * up / down).
    """
    if source_rate == target_rate:
        return wave
    down, up = resample_factors(source_rate, target_rate)
    if up * down <= RESAMPLE_TORCH_TAPS:
        import torch

        with torch.no_grad():
            out = _torch_resampler(down, up)(torch.from_numpy(wave))
        return out.numpy().astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    window = _polyphase_filter(down, up).copy()  # resample_poly scales its filter in place
    out = resample_poly(wave.astype(np.float64), up, down, window=window)
    return out.astype(np.float32)


def crop_or_pad(wave: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Exactly `length` samples.

    Longer input: `wave[offset : offset + length]`. Shorter input: zeros with `wave` placed at
    `offset`. Either way `0 <= offset <= |len(wave) - length|` (see `max_offset`).
    """
    if length <= 0:
        raise ValueError(f"crop length must be > 0 (got {length})")
    n = len(wave)
    if not 0 <= offset <= max_offset(n, length):
        raise ValueError(f"offset {offset} outside [0, {max_offset(n, length)}] for {n}->{length}")
    if n >= length:
        return wave[offset : offset + length]
    out = np.zeros(length, dtype=wave.dtype)
    out[offset : offset + n] = wave
    return out


def max_offset(n: int, length: int) -> int:
    """Largest valid `offset` of `crop_or_pad` for a signal of n samples."""
    return abs(n - length)


def decode_audio(
    data: bytes, *, sample_rate: int, clip_samples: int | None = None, offset: int = 0
) -> tuple[np.ndarray, AudioInfo]:
    """Bytes of a WAV/FLAC/OGG file -> (mono float32 [samples] at `sample_rate`, info).

    Channels are averaged; with `clip_samples` the resampled signal goes through
    `crop_or_pad(wave, clip_samples, offset)`. Memory: the whole decoded file, once at the
    source rate and once at the target rate.
    """
    if not data:
        raise DecodeError(EMPTY_FILE)
    container = sniff_audio(data)
    if container == "WAV":
        check_wav_complete(data)
    frames, info = _read_soundfile(data, container)
    if info.frames == 0:
        raise DecodeError(NO_SAMPLES)
    wave = frames.mean(axis=1) if info.channels > 1 else frames[:, 0]
    if not np.isfinite(wave).all():
        raise DecodeError(NON_FINITE_AUDIO, f"{int((~np.isfinite(wave)).sum())} samples")
    wave = resample(np.ascontiguousarray(wave, dtype=np.float32), info.source_rate, sample_rate)
    if clip_samples is not None:
        wave = crop_or_pad(wave, clip_samples, offset)
    return wave, info


def _classify_image_error(data: bytes, exc: Exception) -> DecodeError:
    message = str(exc)
    if isinstance(exc, Image.DecompressionBombError):
        return DecodeError(IMAGE_TOO_LARGE, message)
    if isinstance(exc, UnidentifiedImageError):
        known = any(data.startswith(sig) for sig in _IMAGE_SIGNATURES)
        reason = CORRUPT_IMAGE_HEADER if known else NOT_IMAGE
        return DecodeError(reason, f"starts with {data[:8]!r}")
    if "truncated" in message.lower():
        return DecodeError(TRUNCATED_IMAGE, message)
    return DecodeError(CORRUPT_IMAGE_DATA, f"{type(exc).__name__}: {message}")


def decode_image(data: bytes) -> np.ndarray:
    """Bytes of an image file -> uint8 [H, W, 3] (RGB; alpha dropped, greyscale repeated).

    `verify()` checks the container (PNG chunk CRCs), then a fresh handle decodes every pixel,
    so truncated data fails here. Memory: one H*W*3 array (plus PIL's copy while converting).
    """
    if not data:
        raise DecodeError(EMPTY_FILE)
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise _classify_image_error(data, e) from None
    array = np.asarray(rgb, dtype=np.uint8)
    if array.ndim != 3 or array.shape[0] == 0 or array.shape[1] == 0:
        raise DecodeError(CORRUPT_IMAGE_DATA, f"decoded shape {array.shape}")
    return array


def fetch(uri: str, *, retries: int = 3, timeout_s: float | None = READ_TIMEOUT_S) -> bytes:
    """`fs.read_bytes` with I/O failures turned into DecodeError (file not found, not a regular
    file, read timeout, read error). Only regular files are read; each attempt is bounded."""
    try:
        return fs.read_bytes(uri, retries=retries, timeout_s=timeout_s)
    except FileNotFoundError:
        raise DecodeError(FILE_NOT_FOUND, uri) from None
    except (fs.NotARegularFile, IsADirectoryError) as e:  # a directory is no file either
        raise DecodeError(NOT_REGULAR_FILE, str(e)) from None
    except fs.ReadTimeout as e:
        raise DecodeError(READ_TIMEOUT, str(e)) from None
    except (OSError, ValueError) as e:
        raise DecodeError(READ_ERROR, f"{uri}: {e}") from None


def load_audio(
    uri: str, *, sample_rate: int, clip_samples: int | None = None, offset: int = 0,
    timeout_s: float | None = READ_TIMEOUT_S,
) -> tuple[np.ndarray, AudioInfo]:
    """Read + `decode_audio`; every failure is a DecodeError."""
    return decode_audio(
        fetch(uri, timeout_s=timeout_s), sample_rate=sample_rate, clip_samples=clip_samples,
        offset=offset,
    )


def load_image(uri: str, *, timeout_s: float | None = READ_TIMEOUT_S) -> np.ndarray:
    """Read + `decode_image`; every failure is a DecodeError."""
    return decode_image(fetch(uri, timeout_s=timeout_s))


NON_NUMERIC = "non-numeric value"
INFINITE_VALUE = "infinite value"
ALL_ROWS_UNUSABLE = "all log rows unusable"
_MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none"})


@dataclass(frozen=True)
class LogProblem:
    """One problem found in the log table. Key-level problems have `row = column = None`."""

    key: str
    row: int | None  # position in the input frame
    column: str | None
    value: str
    reason: str


def _clean_numeric(raw: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(float64 values with NaN for anything unusable, non-numeric mask, infinite mask)."""
    values = pd.to_numeric(raw, errors="coerce").astype("float64").to_numpy(copy=True)
    if raw.dtype == object or pd.api.types.is_string_dtype(raw.dtype):
        text = raw.astype("string").str.strip().str.lower()
        missing_token = text.isna().to_numpy() | text.isin(_MISSING_TOKENS).fillna(True).to_numpy()
        non_numeric = np.isnan(values) & ~missing_token
        values[missing_token] = np.nan  # "nan" is a missing cell, not a problem
    else:
        non_numeric = np.zeros(len(values), dtype=bool)
    infinite = np.isinf(values)
    values[infinite] = np.nan
    return values, non_numeric, infinite


def clean_log_rows(
    df: pd.DataFrame,
    numeric_cols: list[str],
    categorical_cols: list[str],
    *,
    key_col: str = "key",
) -> tuple[pd.DataFrame, list[LogProblem]]:
    """Coerce log columns to clean types and report what was wrong.

    Numeric columns become float64: non-numeric strings and +-inf turn into NaN and are
    reported (NaN / empty cells are simply missing). Categorical columns become strings
    (missing: NaN/None). A key whose rows have no finite number and no category at all gets one
    `all log rows unusable` problem: the pipeline quarantines its tabular view.
    Cost: O(rows) per column, vectorised.
    """
    absent = [c for c in [key_col, *numeric_cols, *categorical_cols] if c not in df.columns]
    if absent:
        raise ValueError(f"log table lacks columns {absent} (has {list(df.columns)})")
    out = df.copy()
    keys = df[key_col].astype(str).to_numpy()
    problems: list[LogProblem] = []
    usable = np.zeros(len(df), dtype=bool)
    for col in numeric_cols:
        values, non_numeric, infinite = _clean_numeric(df[col])
        for mask, reason in ((non_numeric, NON_NUMERIC), (infinite, INFINITE_VALUE)):
            for i in np.flatnonzero(mask):
                problems.append(LogProblem(keys[i], int(i), col, str(df[col].iloc[i]), reason))
        out[col] = values
        usable |= np.isfinite(values)
    for col in categorical_cols:
        raw = df[col]
        present = raw.notna().to_numpy()
        out[col] = [str(v) if ok else None for v, ok in zip(raw.tolist(), present, strict=True)]
        usable |= present
    any_usable = pd.Series(usable).groupby(keys, sort=True).any()
    for key in any_usable.index[~any_usable.to_numpy()]:
        problems.append(LogProblem(str(key), None, None, "", ALL_ROWS_UNUSABLE))
    return out, problems


def unusable_keys(problems: list[LogProblem]) -> list[str]:
    """Keys whose log rows are all unusable (their tabular view is a bad record)."""
    return [p.key for p in problems if p.reason == ALL_ROWS_UNUSABLE]
