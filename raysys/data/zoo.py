"""A small archive of real broken files, with the exact outcome expected for each record.

`make_corrupt_archive(out, seed)` writes a manifest, files, logs and relevance in the archive
format, mixing good entities with every failure the pipeline must quarantine, and returns a
`ZooExpected` that says what `load_archive` must report and what each file's decode must
raise. Tests (and the pipeline's quarantine tests) assert exact numbers against it.
"""

from __future__ import annotations

import io
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
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


# -- the zoo of kinds (issue 16) ---------------------------------------------------------------
#
# Every kind of bad input is made from a small demo archive (`make_demo_archive`). Record-level
# kinds (one file, path, log row or rating) do not interfere, so `make_zoo_archive` plants all of
# them in ONE archive, each on its own entity (an audio kind and an image kind may share an
# entity: views are decoded independently). Fatal kinds (a broken manifest, log or relevance
# table) each need their own archive: `break_archive(root, kind)` applies one to a copy of the
# tables. Expected outcomes live with the tests (tests/test_zoo.py) and docs/archive-format.md.

Plant = Callable[[Path], str | None]  # archive root -> the manifest cell for the victim's view
ZOO_DIR = "zoo"  # planted files, inside the archive
OUTSIDE_DIR = "outside"  # a sibling of the archive: files reached by paths leaving it
TONE_RATE = 16000


def _tone(rate: int = TONE_RATE, seconds: float = 1.0, channels: int = 1,
          value: float = 0.4) -> np.ndarray:
    t = np.arange(max(1, int(rate * seconds))) / rate
    wave = (value * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    return np.repeat(wave[:, None], channels, 1) if channels > 1 else wave


def _sound(wave: np.ndarray, rate: int = TONE_RATE, fmt: str = "WAV",
           subtype: str | None = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _picture(mode: str = "RGB", size: tuple[int, int] = (48, 40), fmt: str = "PNG") -> bytes:
    from PIL import Image

    image = Image.new("RGB", size, (40, 120, 200))
    image.paste((220, 60, 30), (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    buffer = io.BytesIO()
    image.convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


def _noisy_jpeg() -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.effect_noise((160, 120), 60).convert("RGB").save(buffer, format="JPEG")
    return buffer.getvalue()


def _patched(data: bytes, offset: int, value: bytes) -> bytes:
    return data[:offset] + value + data[offset + len(value):]


def _smashed(data: bytes, n: int) -> bytes:
    """`n` garbage bytes in the middle of `data`."""
    middle = len(data) // 2
    return _patched(data, middle, _garbage(np.random.default_rng(len(data)), n))


def _bomb_png() -> bytes:
    """A 24 KB PNG of 20000 x 10000 pixels (200 M): past Pillow's hard limit of 2 x 89 M."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("1", (20000, 10000)).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(root: Path, name: str, data: bytes) -> str:
    path = root / ZOO_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return f"{ZOO_DIR}/{name}"


def _file(name: str, make: Callable[[], bytes]) -> Plant:
    return lambda root: _write(root, name, make())


AUDIO_FILE_KINDS: dict[str, Plant] = {
    "audio-corrupt-header": _file("corrupt.wav", lambda: _sound(_tone())[:12] + _garbage(
        np.random.default_rng(1), 3000)),
    "audio-corrupt-data": _file("corrupt.flac", lambda: _smashed(_sound(_tone(), fmt="FLAC"),
                                                                 600)),
    "audio-empty": _file("empty.wav", lambda: b""),
    "audio-truncated-wav": _file("truncated.wav", lambda: _sound(_tone())[:16000]),
    "audio-truncated-flac": _file("truncated.flac",
                                  lambda: _sound(_tone(), fmt="FLAC")[:2000]),
    "audio-text-as-wav": _file("text.wav", lambda: b"this is a text file, not audio\n" * 20),
    "audio-mp3-as-wav": _file("mp3.wav", lambda: b"ID3\x04\x00\x00\x00\x00\x00\x00" + _garbage(
        np.random.default_rng(2), 2000)),
    "audio-aiff": _file("sound.aiff", lambda: _sound(_tone(), fmt="AIFF")),
    "audio-header-only": _file("header-only.wav", lambda: _sound(np.zeros(0, np.float32))),
    "audio-nan-samples": _file("nan.wav", lambda: _sound(_tone(value=np.nan), subtype="FLOAT")),
    "audio-huge-float": _file("huge.wav", lambda: _sound(_tone(value=1e30), subtype="FLOAT")),
    "audio-rate-zero": _file("rate0.wav", lambda: _patched(_sound(_tone()), 24, b"\0" * 4)),
    "audio-zero-channels": _file("ch0.wav", lambda: _patched(_sound(_tone()), 22, b"\0\0")),
    "audio-flac-named-wav": _file("flac.wav", lambda: _sound(_tone(), fmt="FLAC")),
    "audio-ogg-vorbis": _file("vorbis.ogg", lambda: _sound(_tone(), fmt="OGG",
                                                           subtype="VORBIS")),
    "audio-rate-8001": _file("r8001.wav", lambda: _sound(_tone(8001), 8001)),
    "audio-rate-22051": _file("r22051.wav", lambda: _sound(_tone(22051), 22051)),
    "audio-rate-1hz": _file("r1.wav", lambda: _sound(_tone(1, 3.0), 1)),
    "audio-rate-192k": _file("r192k.wav", lambda: _sound(_tone(192000, 0.5), 192000)),
    "audio-6-channels": _file("ch6.wav", lambda: _sound(_tone(channels=6))),
    "audio-64-channels": _file("ch64.wav", lambda: _sound(_tone(seconds=0.2, channels=64))),
    "audio-pcm-u8": _file("u8.wav", lambda: _sound(_tone(), subtype="PCM_U8")),
    "audio-pcm-24": _file("s24.wav", lambda: _sound(_tone(), subtype="PCM_24")),
    "audio-float64": _file("f64.wav", lambda: _sound(_tone(), subtype="DOUBLE")),
    "audio-ulaw": _file("ulaw.wav", lambda: _sound(_tone(), subtype="ULAW")),
    "audio-silence": _file("silence.wav", lambda: _sound(_tone(value=0.0))),
    "audio-ten-samples": _file("short.wav", lambda: _sound(_tone(seconds=10 / TONE_RATE))),
}

IMAGE_FILE_KINDS: dict[str, Plant] = {
    "image-corrupt-header": _file("corrupt.png", lambda: _picture()[:8] + _garbage(
        np.random.default_rng(3), 1500)),
    "image-corrupt-data": _file("broken.png", lambda: _smashed(_picture(size=(300, 200)), 200)),
    "image-truncated-png": _file("truncated.png",
                                 lambda: (lambda p: p[: len(p) // 2])(_picture(size=(300, 200)))),
    "image-truncated-jpeg": _file("truncated.jpg", lambda: (lambda p: p[: len(p) // 2])(
        _noisy_jpeg())),
    "image-text-as-png": _file("text.png", lambda: b"not an image\n" * 30),
    "image-empty": _file("empty.png", lambda: b""),
    "image-bomb": _file("bomb.png", _bomb_png),
    "image-jpeg-named-png": _file("jpeg.png", lambda: _picture(fmt="JPEG")),
    "image-rgba": _file("rgba.png", lambda: _picture("RGBA")),
    "image-grey-16bit": _file("grey16.png", lambda: _picture("I;16")),
    "image-palette": _file("palette.png", lambda: _picture("P")),
    "image-cmyk-jpeg": _file("cmyk.jpg", lambda: _picture("CMYK", fmt="JPEG")),
    "image-1x1": _file("dot.png", lambda: _picture(size=(1, 1))),
    "image-1x4000": _file("line.png", lambda: _picture(size=(1, 4000))),
    "image-gif": _file("anim.gif", lambda: _picture("P", fmt="GIF")),
    "image-tiff": _file("scan.tiff", lambda: _picture(fmt="TIFF")),
    "image-bmp": _file("old.bmp", lambda: _picture(fmt="BMP")),
    "image-webp": _file("web.webp", lambda: _picture(fmt="WEBP")),
}


def _outside(root: Path, name: str, data: bytes) -> Path:
    path = root.parent / OUTSIDE_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _fifo(root: Path, name: str) -> str:
    path = root / ZOO_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return f"{ZOO_DIR}/{name}"


def _link(root: Path, name: str, target: str | Path) -> str:
    path = root / ZOO_DIR / name
    path.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, path)
    return f"{ZOO_DIR}/{name}"


def _directory(root: Path, name: str) -> str:
    (root / ZOO_DIR / name).mkdir(parents=True)
    return f"{ZOO_DIR}/{name}"


# Paths: (view, plant). Paths that leave the archive are refused unless data.allow_outside_paths.
PATH_KINDS: dict[str, tuple[str, Plant]] = {
    "path-missing-file": ("audio", lambda root: f"{ZOO_DIR}/nowhere.wav"),
    "path-fifo": ("audio", lambda root: _fifo(root, "fifo.wav")),
    "path-directory": ("image", lambda root: _directory(root, "folder.png")),
    "path-device": ("image", lambda root: "/dev/zero"),
    "path-symlink-inside": ("audio", lambda root: _link(
        root, "link.wav", root / _write(root, "target.wav", _sound(_tone())))),
    "path-symlink-dangling": ("image", lambda root: _link(root, "dangling.png",
                                                          root / ZOO_DIR / "gone.png")),
    "path-symlink-loop": ("audio", lambda root: _link(root, "loop.wav", root / ZOO_DIR /
                                                      "loop.wav")),
    "path-symlink-to-fifo": ("image", lambda root: _link(
        root, "fifo-link.png", root / _fifo(root, "fifo.png"))),
    "path-symlink-outside": ("audio", lambda root: _link(
        root, "out-link.wav", _outside(root, "linked.wav", _sound(_tone())))),
    "path-dotdot-outside": ("image", lambda root: "../" + _outside(
        root, "dotdot.png", _picture()).relative_to(root.parent).as_posix()),
    "path-absolute-outside": ("audio", lambda root: str(_outside(root, "abs.wav",
                                                                 _sound(_tone())))),
    "path-file-uri": ("image", lambda root: "file://" + str(root / _write(root, "uri.png",
                                                                         _picture()))),
    "path-file-uri-relative": ("audio", lambda root: "file://zoo/x.wav"),
    "path-http-uri": ("image", lambda root: "http://example.com/a.png"),
    "path-nul-byte": ("audio", lambda root: f"{ZOO_DIR}/a\0b.wav"),
    "path-padded": ("image", lambda root: f"  {_write(root, 'padded.png', _picture())}  "),
    "path-empty": ("audio", lambda root: ""),
    "path-blank": ("image", lambda root: "   "),
}

# Kinds planted in the log and relevance tables and the manifest (key-level, non-fatal).
LOG_KINDS = ("logs-inf-cells", "logs-text-cells", "logs-nan-cells", "logs-null-time",
             "logs-all-unusable", "logs-unknown-key")
RELEVANCE_KINDS = ("rating-above-100", "rating-negative", "rating-nan", "rating-unknown-query",
                   "rating-unknown-candidate", "rating-unknown-view", "rating-duplicate-pair")
ENTITY_KINDS = ("manifest-duplicate-key",)
GHOST_LOG_KEY, GHOST_QUERY = "ghost-logs", "ghost-query"


@dataclass
class ZooArchive:
    """The grouped zoo: `victims[kind]` is the key whose record carries that kind."""

    root: str
    entities: int  # unique manifest keys
    victims: dict[str, str] = field(default_factory=dict)
    ratings: int = 0  # rows of relevance.parquet, bad ones included


def record_kinds() -> list[str]:
    """Every kind `make_zoo_archive` plants."""
    return [*AUDIO_FILE_KINDS, *IMAGE_FILE_KINDS, *PATH_KINDS, *LOG_KINDS, *RELEVANCE_KINDS,
            *ENTITY_KINDS]


def _media_plan() -> dict[str, list[tuple[str, Plant]]]:
    """view -> [(kind, plant)] in entity order."""
    plan: dict[str, list[tuple[str, Plant]]] = {
        "audio": list(AUDIO_FILE_KINDS.items()), "image": list(IMAGE_FILE_KINDS.items())}
    for kind, (view, plant) in PATH_KINDS.items():
        plan[view].append((kind, plant))
    return plan


def _plant_media(root: Path, manifest: pd.DataFrame, zoo: ZooArchive) -> None:
    for view, kinds in _media_plan().items():
        for i, (kind, plant) in enumerate(kinds):
            manifest.loc[i, view] = plant(root)
            zoo.victims[kind] = str(manifest.loc[i, "key"])


def _plant_logs(logs: pd.DataFrame, victims: dict[str, str]) -> pd.DataFrame:
    logs = logs.copy()
    logs["tone"] = logs["tone"].map(lambda v: f"{v:.3f}").astype(object)  # a text numeric column
    rows = {kind: np.flatnonzero((logs["key"] == key).to_numpy())
            for kind, key in victims.items() if kind.startswith("logs-")}
    logs.loc[rows["logs-inf-cells"][:2], "level"] = np.inf
    logs.loc[rows["logs-text-cells"][:1], "tone"] = "n/a?"
    logs.loc[rows["logs-nan-cells"][:3], "rate"] = np.nan
    logs["time"] = logs["time"].astype("float64")
    logs.loc[rows["logs-null-time"][:1], "time"] = np.nan
    unusable = rows["logs-all-unusable"]
    for column in ("level", "rate", "temp", "events", "tone", "state"):
        logs[column] = logs[column].astype(object)
        logs.loc[unusable, column] = None
    ghost = logs.iloc[:2].copy()
    ghost["key"] = GHOST_LOG_KEY
    return pd.concat([logs, ghost], ignore_index=True)


def _plant_ratings(relevance: pd.DataFrame, keys: list[str], victims: dict[str, str]
                   ) -> pd.DataFrame:
    v = victims
    first = relevance[relevance["query"] == v["rating-duplicate-pair"]].iloc[0]
    bad = [
        (v["rating-above-100"], keys[0], 150.0, None),
        (v["rating-negative"], keys[0], -1.0, None),
        (v["rating-nan"], keys[0], float("nan"), None),
        (GHOST_QUERY, keys[0], 50.0, None),
        (v["rating-unknown-candidate"], "ghost-candidate", 50.0, None),
        (v["rating-unknown-view"], keys[0], 50.0, "video"),
        (first["query"], first["candidate"], 10.0, None),
    ]
    extra = pd.DataFrame(bad, columns=["query", "candidate", "relevance", "query_view"])
    return pd.concat([relevance.assign(query_view=None), extra], ignore_index=True)


def _write_table(path: Path, frame: pd.DataFrame) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def make_zoo_archive(out: str | Path, *, seed: int = 0) -> ZooArchive:
    """A demo archive with every record-level kind planted once (see `record_kinds`).

    Entity i carries audio kind i and image kind i; the last `spare` entities (good media)
    carry the log and rating kinds. Manifest rows: the entities plus one duplicate key.
    """
    spare = len(RELEVANCE_KINDS) + 1
    import pyarrow.parquet as pq

    from raysys.data.demo import make_demo_archive

    root = Path(out).absolute()
    n = max(len(kinds) for kinds in _media_plan().values()) + spare
    make_demo_archive(str(root), entities=n, seed=seed, missing_fraction=0.0)
    manifest = pq.read_table(root / "manifest.parquet").to_pandas()
    zoo = ZooArchive(str(root), n)
    _plant_media(root, manifest, zoo)
    keys = manifest["key"].tolist()
    spares = keys[n - spare:]  # log and rating kinds: different views, may share a key
    zoo.victims |= dict(zip(LOG_KINDS[:-1], spares, strict=False))
    zoo.victims |= dict(zip(RELEVANCE_KINDS, spares, strict=False))
    zoo.victims |= {"logs-unknown-key": GHOST_LOG_KEY, "rating-unknown-query": GHOST_QUERY,
                    "manifest-duplicate-key": keys[-1]}
    duplicate = manifest.iloc[[0]].assign(key=keys[-1])
    _write_table(root / "manifest.parquet", pd.concat([manifest, duplicate], ignore_index=True))
    logs = pq.read_table(root / "logs.parquet").to_pandas()
    _write_table(root / "logs.parquet", _plant_logs(logs, zoo.victims))
    relevance = _plant_ratings(pq.read_table(root / "relevance.parquet").to_pandas(), keys,
                               zoo.victims)
    _write_table(root / "relevance.parquet", relevance)
    zoo.ratings = len(relevance)
    return zoo


# -- fatal kinds: one broken table each ----------------------------------------------------------

Break = Callable[[Path], None]  # breaks the tables of the archive at this root, in place
TABLES = ("manifest.parquet", "logs.parquet", "relevance.parquet")


def copy_tables(src: str | Path, dst: str | Path) -> str:
    """A copy of an archive's tables only (media paths still resolve against `dst`, and are
    not needed: fatal kinds fail before any file is decoded)."""
    import shutil

    Path(dst).mkdir(parents=True)
    for name in TABLES:
        if (Path(src) / name).exists():
            shutil.copy(Path(src) / name, Path(dst) / name)
    return str(dst)


def _edit(name: str, change: Callable[[pd.DataFrame], pd.DataFrame]) -> Break:
    def apply(root: Path) -> None:
        import pyarrow.parquet as pq

        _write_table(root / name, change(pq.read_table(root / name).to_pandas()))

    return apply


def _replace(name: str, data: Callable[[bytes], bytes]) -> Break:
    def apply(root: Path) -> None:
        path = root / name
        path.write_bytes(data(path.read_bytes() if path.exists() else b""))

    return apply


def _remove(*names: str) -> Break:
    def apply(root: Path) -> None:
        for name in names:
            (root / name).unlink()

    return apply


def _csv(text: str | bytes) -> Break:
    def apply(root: Path) -> None:
        (root / "manifest.parquet").unlink()
        (root / "manifest.csv").write_bytes(text if isinstance(text, bytes) else text.encode())

    return apply


def _set_cell(column: str, row: int, value: object) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = value
        return frame

    return change


M, L, R = TABLES


def _no_locations(root: Path) -> None:
    """No file location and no logs: nothing to read for any entity."""
    _remove(L)(root)
    _edit(M, lambda f: f.assign(audio=None, image=None))(root)


def _huge_log_values(root: Path) -> None:
    """1e200 in the first `level` cell of every key (so training keys have one): finite, but
    its square overflows float64."""
    _edit(L, lambda f: f.assign(level=f["level"].mask(~f["key"].duplicated(), 1e200)))(root)


def _many_bad_ratings(root: Path) -> None:
    """A third of the ratings above 100."""
    _edit(R, lambda f: f.assign(relevance=f["relevance"].where(f.index % 3 != 0, 150.0)))(root)


# Kinds that change the tables but are not ArchiveErrors of `load_archive`.
TABLE_KINDS: dict[str, Break] = {
    "logs-absent": _remove(L),
    "logs-huge-values": _huge_log_values,
    "ratings-too-many-bad": _many_bad_ratings,
}
_CSV_HEAD = "key,audio,image\n"
FATAL_KINDS: dict[str, Break] = {
    "manifest-absent": _remove(M),
    "manifest-not-parquet": _replace(M, lambda _: b"key,audio\nx,y.wav\n"),
    "manifest-truncated-parquet": _replace(M, lambda data: data[: len(data) // 2]),
    "manifest-empty-file": _replace(M, lambda _: b""),
    "manifest-no-key-column": _edit(M, lambda f: f.drop(columns="key")),
    "manifest-key-not-text": _edit(M, lambda f: f.assign(key=range(len(f)))),
    "manifest-unknown-column": _edit(M, lambda f: f.rename(columns={"audio": "Audio"})),
    "manifest-null-key": _edit(M, _set_cell("key", 2, None)),
    "manifest-empty-key": _edit(M, _set_cell("key", 4, "  ")),
    "manifest-nested-label": _edit(M, lambda f: f.assign(label=[[1, 2]] * len(f))),
    "manifest-path-not-text": _edit(M, lambda f: f.assign(audio=range(len(f)))),
    "manifest-no-rows": _edit(M, lambda f: f.iloc[:0]),
    "manifest-no-locations": _no_locations,
    "csv-merged-rows": _csv(_CSV_HEAD + 'a,"a.wav,a.png\nb,b.wav,b.png\nc,c.wav",c.png\n'),
    "csv-missing-field": _csv(_CSV_HEAD + "a,a.wav,a.png\nb,b.png\n"),
    "csv-quote-never-closed": _csv(_CSV_HEAD + 'a,a.wav,a.png\nb,"b.wav,b.png\n'),
    "csv-not-utf8": _csv(_CSV_HEAD.encode() + b"a,\xff.wav,a.png\n"),
    "csv-empty-file": _csv(""),
    "csv-header-only": _csv(_CSV_HEAD),
    "logs-not-parquet": _replace(L, lambda _: b"PAR1 but not really"),
    "logs-no-key-column": _edit(L, lambda f: f.drop(columns="key")),
    "logs-null-key": _edit(L, _set_cell("key", 6, None)),
    "logs-time-text": _edit(L, lambda f: f.assign(time=f["time"].map(str))),
    "logs-list-column": _edit(L, lambda f: f.assign(extra=[[1.0]] * len(f))),
    "relevance-not-parquet": _replace(R, lambda _: b"query,candidate\n"),
    "relevance-no-rating-column": _edit(R, lambda f: f.drop(columns="relevance")),
    "relevance-rating-text": _edit(R, lambda f: f.assign(relevance=f["relevance"].map(str))),
    "relevance-null-query": _edit(R, _set_cell("query", 3, None)),
    "relevance-unknown-column": _edit(R, lambda f: f.assign(note="x")),
}


def break_archive(root: str | Path, kind: str) -> None:
    """Apply one of FATAL_KINDS or TABLE_KINDS to the tables at `root` (a `copy_tables` copy)."""
    (FATAL_KINDS | TABLE_KINDS)[kind](Path(root))
