"""Decoding of audio, images and log rows, against plain reference computations."""

from __future__ import annotations

import io
import math
import struct
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from PIL import Image

from raysys.data import decode as d
from raysys.data.archive import load_archive
from raysys.data.zoo import GOOD, make_corrupt_archive


def wav_bytes(wave: np.ndarray, rate: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def sine(freq: float, rate: int, seconds: float) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    return str(root), make_corrupt_archive(str(root), seed=3)


def decode_outcome(view: str, uri: str) -> str | None:
    try:
        if view == "audio":
            d.load_audio(uri, sample_rate=16000)
        else:
            d.load_image(uri)
    except d.DecodeError as e:
        return e.reason
    return GOOD


def test_every_zoo_file_gives_its_expected_reason(zoo):
    root, expected = zoo
    manifest = load_archive(root).manifest
    got = {}
    for i, key in enumerate(manifest.keys):
        for view in ("audio", "image"):
            uri = manifest.views[view][i]
            if uri is not None:
                got[(key, view)] = decode_outcome(view, uri)
    assert got == expected.decode
    assert expected.counts("audio") == (4, 8)
    assert expected.counts("image") == (5, 6)


def test_resampled_sine_matches_the_ideal_sine():
    data = wav_bytes(sine(440.0, 22050, 1.0), 22050, subtype="FLOAT")
    wave, info = d.decode_audio(data, sample_rate=16000)
    assert (info.format, info.source_rate, info.channels, info.frames) == ("WAV", 22050, 1, 22050)
    assert wave.dtype == np.float32 and wave.shape == (16000,)
    reference = sine(440.0, 16000, 1.0)
    interior = slice(200, -200)  # the sinc filter sees zeros beyond the edges
    np.testing.assert_allclose(wave[interior], reference[interior], atol=2e-3)


def test_stereo_is_averaged_and_same_rate_is_untouched():
    left, right = sine(300.0, 16000, 0.5), sine(500.0, 16000, 0.5)
    data = wav_bytes(np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    wave, info = d.decode_audio(data, sample_rate=16000)
    assert info.channels == 2
    np.testing.assert_array_equal(wave, (left + right) / 2)


@pytest.mark.parametrize("fmt", ["WAV", "FLAC", "OGG"])
def test_formats_roundtrip(fmt):
    source = sine(330.0, 16000, 0.5)
    subtype = "VORBIS" if fmt == "OGG" else "PCM_16"
    wave, info = d.decode_audio(wav_bytes(source, 16000, subtype, fmt), sample_rate=16000)
    assert info.format == fmt and len(wave) == len(source)
    tolerance = 0.05 if fmt == "OGG" else 1 / 2**15
    assert np.max(np.abs(wave - source)) <= tolerance


def naive_crop_or_pad(wave: list[float], length: int, offset: int) -> list[float]:
    if len(wave) >= length:
        return [wave[offset + i] for i in range(length)]
    out = [0.0] * length
    for i, v in enumerate(wave):
        out[offset + i] = v
    return out


@pytest.mark.parametrize("n,length,offset", [(10, 4, 0), (10, 4, 6), (3, 8, 0), (3, 8, 5),
                                             (5, 5, 0)])
def test_crop_or_pad_against_naive(n, length, offset):
    wave = np.arange(1, n + 1, dtype=np.float32)
    got = d.crop_or_pad(wave, length, offset)
    assert got.tolist() == naive_crop_or_pad(wave.tolist(), length, offset)


def test_crop_or_pad_rejects_bad_offsets():
    with pytest.raises(ValueError, match="offset 7 outside"):
        d.crop_or_pad(np.zeros(10, np.float32), 4, 7)
    with pytest.raises(ValueError, match="length must be > 0"):
        d.crop_or_pad(np.zeros(10, np.float32), 0)


def test_clip_is_a_crop_of_the_full_decode():
    data = wav_bytes(sine(200.0, 22050, 1.0), 22050)
    full, _ = d.decode_audio(data, sample_rate=16000)
    clip, _ = d.decode_audio(data, sample_rate=16000, clip_samples=4000, offset=1234)
    np.testing.assert_array_equal(clip, full[1234:5234])
    padded, _ = d.decode_audio(data, sample_rate=16000, clip_samples=20000, offset=100)
    assert padded.shape == (20000,) and not padded[:100].any() and not padded[16100:].any()


def test_wav_with_extra_chunk_is_complete_and_cut_data_is_truncated():
    data = wav_bytes(sine(200.0, 16000, 0.2), 16000)
    extra = b"LIST" + struct.pack("<I", 6) + b"INFOxx"
    with_chunk = data[:12] + extra + data[12:]
    with_chunk = with_chunk[:4] + struct.pack("<I", len(with_chunk) - 8) + with_chunk[8:]
    wave, _ = d.decode_audio(with_chunk, sample_rate=16000)
    assert len(wave) == 3200
    with pytest.raises(d.DecodeError) as e:
        d.decode_audio(with_chunk[:-10], sample_rate=16000)
    assert e.value.reason == d.TRUNCATED_AUDIO


def test_non_finite_float_wav_is_rejected():
    wave = sine(200.0, 16000, 0.1)
    wave[5] = np.nan
    with pytest.raises(d.DecodeError) as e:
        d.decode_audio(wav_bytes(wave, 16000, subtype="FLOAT"), sample_rate=16000)
    assert e.value.reason == d.NON_FINITE_AUDIO and "1 samples" in e.value.detail


def test_png_roundtrip_is_exact_and_modes_become_rgb():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(d.decode_image(png_bytes(Image.fromarray(rgb))), rgb)
    grey = rng.integers(0, 256, (5, 6), dtype=np.uint8)
    got = d.decode_image(png_bytes(Image.fromarray(grey, mode="L")))
    np.testing.assert_array_equal(got, np.repeat(grey[:, :, None], 3, axis=2))
    rgba = rng.integers(0, 256, (4, 4, 4), dtype=np.uint8)
    got = d.decode_image(png_bytes(Image.fromarray(rgba, mode="RGBA")))
    np.testing.assert_array_equal(got, rgba[:, :, :3])


def naive_clean(df, numeric, categorical):
    """Cell-by-cell reference of clean_log_rows."""
    out, problems = {c: [] for c in numeric}, []
    for row in range(len(df)):
        key = df["key"].iloc[row]
        for c in numeric:
            v = df[c].iloc[row]
            text = "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip()
            if text.lower() in ("", "nan", "na", "n/a", "null", "none"):
                out[c].append(math.nan)
                continue
            try:
                x = float(text)
            except ValueError:
                problems.append((key, row, c, d.NON_NUMERIC))
                out[c].append(math.nan)
                continue
            if math.isinf(x):
                problems.append((key, row, c, d.INFINITE_VALUE))
                x = math.nan
            out[c].append(x)
    for key in sorted(set(df["key"])):
        rows = [r for r in range(len(df)) if df["key"].iloc[r] == key]
        usable = any(not math.isnan(out[c][r]) for c in numeric for r in rows) or any(
            df[c].iloc[r] is not None and not pd.isna(df[c].iloc[r])
            for c in categorical for r in rows)
        if not usable:
            problems.append((key, None, None, d.ALL_ROWS_UNUSABLE))
    return out, problems


def test_clean_log_rows_against_naive_reference():
    rng = np.random.default_rng(1)
    cells = ["1.5", "abc", "inf", "-inf", "nan", "", " 2 ", "n/a", "1e3", "x1", None]
    n = 60
    df = pd.DataFrame({
        "key": rng.choice(["a", "b", "c", "d"], n),
        "txt": pd.Series(rng.choice(np.array(cells, dtype=object), n), dtype=object),
        "num": rng.choice([1.0, np.inf, np.nan, -2.5], n),
        "cat": pd.Series(rng.choice(np.array(["u", None], dtype=object), n), dtype=object),
    })
    df.loc[df["key"] == "d", ["txt", "num", "cat"]] = [None, np.nan, None]  # nothing usable
    cleaned, problems = d.clean_log_rows(df, ["txt", "num"], ["cat"])
    ref_values, ref_problems = naive_clean(df, ["txt", "num"], ["cat"])
    for c in ("txt", "num"):
        np.testing.assert_array_equal(cleaned[c].to_numpy(), np.array(ref_values[c]))
    got = sorted(((p.key, p.row, p.column, p.reason) for p in problems), key=repr)
    assert got == sorted(ref_problems, key=repr)
    assert d.unusable_keys(problems) == ["d"]


def test_clean_log_rows_names_missing_columns():
    with pytest.raises(ValueError, match=r"lacks columns \['speed'\]"):
        d.clean_log_rows(pd.DataFrame({"key": ["a"]}), ["speed"], [])


def test_zoo_log_problems_are_exact(zoo):
    root, expected = zoo
    logs = load_archive(root).logs
    assert Counter(p.reason for p in logs.problems) == expected.log_problems
