"""A small archive of real broken files, with the exact outcome expected for each record.

`make_corrupt_archive(out, seed)` writes a manifest, files, logs and relevance in the archive
format, mixing good entities with every failure the pipeline must quarantine, and returns a
`ZooExpected` that says what `load_archive` must report and what each file's decode must
raise. Tests (and the pipeline's quarantine tests) assert exact numbers against it.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import soundfile as sf

from raysys.data import decode as d
from raysys.data import fs
from raysys.data.archive import (
    ALL_ROWS_UNUSABLE,
    BAD_PATH,
    DUPLICATE_KEY,
    ENTITY,
    RATING_OUT_OF_RANGE,
    UNKNOWN_KEY,
)
from raysys.data.demo import draw_image, encode_audio, encode_png, make_entity, synth_audio

GOOD = None  # expected outcome of a record that decodes fine


@dataclass
class ZooExpected:
    """`decode[(key, view)]`: the DecodeError reason of that file (GOOD = None: decodes).
    `archive_bad`: the (key, view, reason) triples `load_archive` reports.
    `log_problems`: reason -> number of `clean_log_rows` problems of logs.parquet."""

    decode: dict[tuple[str, str], str | None] = field(default_factory=dict)
    archive_bad: set[tuple[str, str, str]] = field(default_factory=set)
    log_problems: Counter = field(default_factory=Counter)
    keys: list[str] = field(default_factory=list)  # unique manifest keys, first-kept order

    def counts(self, view: str) -> tuple[int, int]:
        """(good, bad) decode outcomes of one file view."""
        outcomes = [r for (_, v), r in self.decode.items() if v == view]
        good = sum(r is GOOD for r in outcomes)
        return good, len(outcomes) - good


def _good_audio(seed: int, index: int, fmt: str, rate: int | None = None) -> bytes:
    entity = make_entity(seed, index)
    wave = synth_audio(entity, np.random.default_rng([seed, index, 1]))
    if fmt == "ogg":
        buffer = io.BytesIO()
        sf.write(buffer, wave, entity.sample_rate, format="OGG", subtype="VORBIS")
        return buffer.getvalue()
    if fmt == "stereo":
        buffer = io.BytesIO()
        sf.write(buffer, np.stack([wave, -0.5 * wave], 1), rate or 44100, format="WAV",
                 subtype="FLOAT")
        return buffer.getvalue()
    return encode_audio(wave, entity.sample_rate, fmt)


def _good_png(seed: int, index: int) -> bytes:
    return encode_png(draw_image(make_entity(seed, index), np.random.default_rng([seed, index, 2])))


def _garbage(rng: np.random.Generator, n: int) -> bytes:
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes()


def _broken_files(seed: int, rng: np.random.Generator) -> dict[str, tuple[bytes, str]]:
    """file name -> (bytes, expected DecodeError reason)."""
    wav, flac, png = _good_audio(seed, 0, "wav"), _good_audio(seed, 1, "flac"), _good_png(seed, 2)
    flac_mid = bytearray(flac)
    flac_mid[len(flac) // 2 : len(flac) // 2 + 600] = _garbage(rng, 600)
    png_mid = bytearray(png)
    png_mid[len(png) // 2 : len(png) // 2 + 200] = _garbage(rng, 200)
    return {
        "corrupt.wav": (wav[:12] + _garbage(rng, 3000), d.CORRUPT_AUDIO_HEADER),
        "corrupt.flac": (bytes(flac_mid), d.CORRUPT_AUDIO_DATA),
        "empty.wav": (b"", d.EMPTY_FILE),
        "truncated.wav": (wav[: len(wav) // 2], d.TRUNCATED_AUDIO),
        "truncated.flac": (flac[: len(flac) // 2], d.CORRUPT_AUDIO_DATA),  # libsndfile: lost sync
        "text.wav": (b"this is a text file, not audio\n" * 20, d.NOT_AUDIO),
        "fake.mp3.wav": (b"ID3\x04\x00\x00\x00\x00\x00\x00" + _garbage(rng, 2000),
                         d.UNSUPPORTED_AUDIO),
        "corrupt.png": (png[:8] + _garbage(rng, 1500), d.CORRUPT_IMAGE_HEADER),
        "broken.png": (bytes(png_mid), d.CORRUPT_IMAGE_DATA),
        "truncated.png": (png[: len(png) // 2], d.TRUNCATED_IMAGE),
        "text.png": (b"not an image\n" * 30, d.NOT_IMAGE),
        "empty.png": (b"", d.EMPTY_FILE),
    }


# key -> (audio file or URI, image file or URI); None = view missing. Files not written by
# `_broken_files` or the good ones below do not exist.
_MANIFEST = [
    ("good-wav", "good.wav", "good0.png"),
    ("good-flac", "good.flac", None),
    ("good-ogg", "good.ogg", "good1.png"),
    ("good-stereo", "stereo44k.wav", "good2.png"),
    ("bad-audio-bytes", "corrupt.wav", "good3.png"),
    ("bad-flac-data", "corrupt.flac", None),
    ("empty-audio", "empty.wav", "empty.png"),
    ("truncated-wav", "truncated.wav", "truncated.png"),
    ("truncated-flac", "truncated.flac", "broken.png"),
    ("missing-files", "nowhere.wav", "nowhere.png"),
    ("text-audio", "text.wav", "text.png"),
    ("mp3-audio", "fake.mp3.wav", "corrupt.png"),
    ("bad-uri", "http://example.com/a.wav", "good4.png"),
    ("good-wav", "good.flac", "good1.png"),  # duplicate key: the first row wins
    ("logs-only", None, None),
]


def _logs_table(keys: list[str]) -> tuple[pa.Table, Counter]:
    """Good rows for most keys, stray cells for one, nothing usable for another, a ghost key."""
    rows: list[tuple[str, float, str, float, str | None]] = []
    for i, key in enumerate(keys):
        rows += [(key, float(t), f"{0.5 * i + t:.3f}", float(t), "idle") for t in range(8)]
    rows += [("truncated-wav", 9.0, "abc", np.inf, "run"),    # non-numeric + infinite
             ("truncated-wav", 10.0, "n/a", np.nan, None),    # missing cells only: no problem
             ("truncated-wav", 11.0, "inf", 1.0, "run")]      # infinite text
    rows += [("logs-only", 1.0, "nan", np.nan, None), ("logs-only", 2.0, "x", np.inf, None)]
    rows += [("ghost", 1.0, "1.0", 1.0, "idle")]
    problems = Counter({d.NON_NUMERIC: 2, d.INFINITE_VALUE: 3, ALL_ROWS_UNUSABLE: 1})
    names = ("key", "time", "level", "speed", "state")
    table = pa.table({n: [r[j] for r in rows] for j, n in enumerate(names)})
    return table, problems


def _relevance_table(keys: list[str]) -> pa.Table:
    return pa.table({
        "query": [keys[0], keys[0], keys[1], keys[1], keys[2]],
        "candidate": [keys[1], keys[2], keys[0], "ghost", keys[0]],
        "relevance": [80.0, 30.0, 120.0, 50.0, -1.0],
    })


def make_corrupt_archive(out: str, seed: int = 0) -> ZooExpected:
    """Write the corrupt-file zoo to `out` (local or s3://) and return what must happen."""
    root = fs.normalize(out)
    rng = np.random.default_rng([seed, 424242])
    broken = _broken_files(seed, rng)
    files = {name: data for name, (data, _) in broken.items()}
    reasons = {name: reason for name, (_, reason) in broken.items()}
    files["good.wav"] = _good_audio(seed, 3, "wav")
    files["good.flac"] = _good_audio(seed, 4, "flac")
    files["good.ogg"] = _good_audio(seed, 5, "ogg")
    files["stereo44k.wav"] = _good_audio(seed, 6, "stereo")
    files |= {f"good{i}.png": _good_png(seed, 10 + i) for i in range(5)}
    for name, data in files.items():
        fs.write_bytes(fs.join(root, name), data)
    expected = ZooExpected()
    seen: set[str] = set()
    for key, audio, image in _MANIFEST:
        if key in seen:
            expected.archive_bad.add((key, ENTITY, DUPLICATE_KEY))
            continue
        seen.add(key)
        expected.keys.append(key)
        for view, name in (("audio", audio), ("image", image)):
            if name is None:
                continue
            if "://" in name:
                expected.archive_bad.add((key, view, BAD_PATH))
            elif name not in files:
                expected.decode[(key, view)] = d.FILE_NOT_FOUND
            else:
                expected.decode[(key, view)] = reasons.get(name, GOOD)
    manifest = pa.table({
        "key": [k for k, _, _ in _MANIFEST],
        "audio": pa.array([a for _, a, _ in _MANIFEST], type=pa.string()),
        "image": pa.array([i for _, _, i in _MANIFEST], type=pa.string()),
    })
    fs.write_parquet(fs.join(root, "manifest.parquet"), manifest)
    logs, expected.log_problems = _logs_table([k for k in expected.keys if k != "logs-only"])
    fs.write_parquet(fs.join(root, "logs.parquet"), logs)
    expected.archive_bad |= {("logs-only", "tabular", ALL_ROWS_UNUSABLE),
                             ("ghost", "tabular", UNKNOWN_KEY)}
    fs.write_parquet(fs.join(root, "relevance.parquet"), _relevance_table(expected.keys))
    expected.archive_bad |= {("good-flac", "relevance", RATING_OUT_OF_RANGE),
                             ("good-flac", "relevance", f"candidate {UNKNOWN_KEY}"),
                             ("good-ogg", "relevance", RATING_OUT_OF_RANGE)}
    return expected
