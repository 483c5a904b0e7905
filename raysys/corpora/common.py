"""Pieces every corpus builder shares: the rough edges of real recordings, missing views,
graded relevance from shared attributes, and writing the archive files.

Determinism: every random draw comes from `entity_rng(seed, index, stream)`, so equal seeds
give equal archives whatever the order or parallelism of rendering.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import soundfile as sf
from scipy.signal import fftconvolve

from raysys.data import fs


@dataclass(frozen=True)
class CorpusSummary:
    """What a builder wrote: counts per view, label columns and the time it took."""

    name: str
    root: str
    entities: int
    views: dict[str, int]          # view -> entities that have it
    labels: dict[str, int]         # label column -> distinct values
    log_rows: int
    relevance_rows: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def entity_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The generator of one (entity, purpose) pair: independent of any other draw."""
    return np.random.default_rng([seed, index, stream])


# -- rough edges of real recordings ---------------------------------------------------------

def room_reverb(wave: np.ndarray, sample_rate: int, rng: np.random.Generator,
                rt60_range: tuple[float, float] = (0.1, 0.8), wet_range=(0.05, 0.4)) -> np.ndarray:
    """Convolve with a synthetic room response (exponentially decaying noise, RT60 drawn from
    `rt60_range` seconds) and mix `wet` of it with the dry signal; length is kept."""
    rt60 = rng.uniform(*rt60_range)
    n = max(1, int(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
    wet = fftconvolve(wave, ir)[: wave.size]
    mix = rng.uniform(*wet_range)
    return ((1 - mix) * wave + mix * wet).astype(np.float32)


def channel(wave: np.ndarray, sample_rate: int, rng: np.random.Generator,
            tilt_db_per_octave: tuple[float, float] = (-3.0, 3.0),
            bump_db: tuple[float, float] = (-8.0, 8.0),
            band_hz: tuple[tuple[float, float], tuple[float, float]] = ((60.0, 300.0),
                                                                     (3500.0, 7500.0)),
            ) -> np.ndarray:
    """Colour the recording like a different microphone and room would: a random spectral
    tilt (dB per octave around 1 kHz), one broad resonance or notch (one octave wide, at
    300 Hz-4 kHz) and a random band limit (high-pass and low-pass corners drawn from
    `band_hz`, 12 dB/octave). Applied in the frequency domain; length kept."""
    n = wave.size
    f = np.fft.rfftfreq(n, 1.0 / sample_rate)
    octaves = np.log2(np.maximum(f, 1.0) / 1000.0)
    centre = np.log2(rng.uniform(300.0, 4000.0) / 1000.0)
    gain_db = (rng.uniform(*tilt_db_per_octave) * octaves
               + rng.uniform(*bump_db) * np.exp(-0.5 * ((octaves - centre) / 0.5) ** 2))
    low, high = rng.uniform(*band_hz[0]), rng.uniform(*band_hz[1])
    gain = 10 ** (gain_db / 20)
    gain /= np.sqrt(1 + (low / np.maximum(f, 1e-3)) ** 4)  # 2nd-order high-pass magnitude
    gain /= np.sqrt(1 + (f / high) ** 4)  # 2nd-order low-pass magnitude
    return np.fft.irfft(np.fft.rfft(wave) * gain, n).astype(np.float32)


def level(wave: np.ndarray, rng: np.random.Generator, db_range=(-30.0, -6.0)) -> np.ndarray:
    """Scale to a random peak level (dBFS) drawn from `db_range`: recordings differ in level."""
    peak = float(np.max(np.abs(wave))) or 1.0
    return (wave / peak * 10 ** (rng.uniform(*db_range) / 20)).astype(np.float32)


def add_noise(wave: np.ndarray, rng: np.random.Generator, snr_db_range=(15.0, 40.0)) -> np.ndarray:
    """Add white background noise at a random SNR."""
    power = float(np.mean(wave ** 2)) or 1e-12
    snr = rng.uniform(*snr_db_range)
    noise = rng.standard_normal(wave.size) * np.sqrt(power / 10 ** (snr / 10))
    return (wave + noise).astype(np.float32)


def encode_audio(wave: np.ndarray, sample_rate: int, fmt: str = "wav") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1, 1), sample_rate, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


# -- views and relevance --------------------------------------------------------------------

def missing_masks(n: int, fraction: float, seed: int,
                  views: Sequence[str]) -> dict[str, np.ndarray]:
    """round(fraction * n) entities miss each of `views`; no entity misses all of them."""
    if not 0 <= fraction <= 0.5:
        raise ValueError(f"missing_fraction must be within [0, 0.5] (got {fraction})")
    rng = np.random.default_rng([seed, 7_777_777])
    count = round(fraction * n)
    masks: dict[str, np.ndarray] = {}
    for view in views:
        allowed = np.ones(n, dtype=bool)
        if len(masks) == len(views) - 1:  # the last view: keep it wherever all others are gone
            allowed = ~np.logical_and.reduce(list(masks.values()))
        pool = np.flatnonzero(allowed)
        masks[view] = np.zeros(n, dtype=bool)
        masks[view][rng.choice(pool, min(count, pool.size), replace=False)] = True
    return masks


def graded_relevance(attributes: pd.DataFrame, weights: Mapping[str, float], *, seed: int,
                     candidates: int = 16, same_share: float = 0.5, noise: float = 4.0
                     ) -> pa.Table:
    """`query, candidate, relevance` rows: rating = 100 * sum of the weights of the attribute
    columns two entities share (weights sum to <= 1) + Gaussian noise, clipped to 0-100.

    `attributes` has a `key` column plus one column per weighted attribute. Per query, about
    `same_share` of the candidates share the most heavily weighted attribute, the rest are
    random, so every list spans the rating range.
    """
    keys = attributes["key"].to_numpy()
    cols = list(weights)
    values = {c: attributes[c].to_numpy() for c in cols}
    main = max(cols, key=lambda c: weights[c])
    out: dict[str, list] = {"query": [], "candidate": [], "relevance": []}
    for i in range(len(keys)):
        rng = entity_rng(seed, i, 3)
        others = np.arange(len(keys)) != i
        same = np.flatnonzero(others & (values[main] == values[main][i]))
        chosen = rng.choice(same, min(round(candidates * same_share), same.size), replace=False)
        rest = np.setdiff1d(np.flatnonzero(others), chosen)
        chosen = np.concatenate([chosen, rng.choice(rest, min(candidates - chosen.size,
                                                              rest.size), replace=False)])
        for j in chosen:
            score = 100 * sum(w * (values[c][i] == values[c][j]) for c, w in weights.items())
            out["query"].append(keys[i])
            out["candidate"].append(keys[j])
            out["relevance"].append(round(float(np.clip(score + rng.normal(0, noise), 0, 100)), 1))
    return pa.table(out)


def write_tables(root: str, manifest: pd.DataFrame, logs: pd.DataFrame | None,
                 relevance: pa.Table | None, seed: int) -> None:
    """Write manifest.parquet last (a reader that finds it finds a complete archive); log
    rows are shuffled in the file (readers must order by `time`)."""
    if logs is not None and len(logs):
        order = np.random.default_rng([seed, 5_555_555]).permutation(len(logs))
        fs.write_parquet(fs.join(root, "logs.parquet"),
                         pa.Table.from_pandas(logs.iloc[order], preserve_index=False))
    if relevance is not None:
        fs.write_parquet(fs.join(root, "relevance.parquet"), relevance)
    fs.write_parquet(fs.join(root, "manifest.parquet"),
                     pa.Table.from_pandas(manifest, preserve_index=False))
