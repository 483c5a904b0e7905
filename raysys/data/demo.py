"""The embedded demo archive: synthetic entities whose views share a hidden state.

Every entity has a fine class (8, in 4 coarse groups of 2), a pitch class (12) and a tempo
(5 values, BPM). All three views are generated from that state, so cross-view learning is
measurable and the factors can be probed:

- audio: a pulse train at the tempo; every pulse is a harmonic tone at the pitch
  (f0 = 220 Hz * 2**(pitch/12), detuned by at most 30 cents). The fundamental is always the
  loudest partial. Timbre comes from the class: the coarse group sets the harmonic roll-off
  and the note decay, the fine class within the group picks odd-only or all harmonics. White
  noise at 12-30 dB SNR. WAV or FLAC, 16 kHz or 22.05 kHz, 2-4 s.
- image (PNG, 64-96 px a side): a shape per coarse group (circle, square, triangle, cross)
  in a colour per fine class; a dot at clock position `pitch` (0 = 12 o'clock, 30 deg per
  step); `tempo index + 1` small bars in the bottom-left corner; random tint, size, position
  and pixel noise.
- logs: 6-20 rows with `time`, numeric sensors (`level` ~ fine class, `rate` ~ beats per
  second, `tone` ~ f0, `temp` drifting with the coarse group, integer `events`) and a
  categorical `state` from a class-dependent Markov chain. Rows are shuffled in the file.

Relevance: for each query, 16 candidates (same fine class, same coarse group, random), rated
`100 * (0.45 [same fine] + 0.2 [same coarse] + 0.2 pitch_sim + 0.15 tempo_sim) + noise`.

Determinism: entity i is generated from `default_rng([seed, i])`, so equal seeds give equal
bytes (manifest, logs, relevance) and equal decoded audio/images.
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import soundfile as sf
from PIL import Image, ImageDraw

from raysys.data import fs

FINE_CLASSES = 8
PITCH_CLASSES = 12
TEMPOS_BPM = (80, 92, 106, 122, 140)  # 15% apart, less than an octave overall
SAMPLE_RATES = (16000, 22050)
BASE_HZ = 220.0
ROLLOFF = (0.6, 1.0, 1.4, 1.8)  # harmonic amplitude h**-rolloff, per coarse group
DECAY_S = (0.05, 0.08, 0.12, 0.16)  # note decay time constant, per coarse group
SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = ((200, 40, 40), (230, 120, 30), (40, 150, 60), (20, 190, 170),
           (40, 70, 200), (140, 60, 200), (90, 90, 90), (200, 50, 150))
STATES = ("idle", "run", "peak", "cool")
LOG_ROWS = (6, 20)
CANDIDATES = 16


@dataclass(frozen=True)
class Entity:
    """The hidden state of one demo entity (labels) plus its nuisance draws."""

    index: int
    fine: int
    pitch: int
    tempo_bpm: int
    sample_rate: int
    audio_format: str  # "wav" | "flac"

    @property
    def key(self) -> str:
        return f"demo-{self.index:05d}"

    @property
    def coarse(self) -> int:
        return self.fine // 2

    @property
    def tempo_index(self) -> int:
        return TEMPOS_BPM.index(self.tempo_bpm)

    @property
    def f0(self) -> float:
        return BASE_HZ * 2 ** (self.pitch / 12)


def entity_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """Independent generator per (seed, entity, stream): content does not depend on N."""
    return np.random.default_rng([seed, index, stream])


def make_entity(seed: int, index: int) -> Entity:
    rng = entity_rng(seed, index, 0)
    return Entity(
        index=index,
        fine=int(rng.integers(FINE_CLASSES)),
        pitch=int(rng.integers(PITCH_CLASSES)),
        tempo_bpm=int(rng.choice(TEMPOS_BPM)),
        sample_rate=int(rng.choice(SAMPLE_RATES)),
        audio_format=str(rng.choice(["wav", "flac"])),
    )


def synth_audio(entity: Entity, rng: np.random.Generator) -> np.ndarray:
    """Mono float32 waveform in [-1, 1] at `entity.sample_rate` (see module docstring)."""
    sr = entity.sample_rate
    t = np.arange(int(rng.uniform(2.0, 4.0) * sr)) / sr
    f0 = entity.f0 * 2 ** (rng.uniform(-30, 30) / 1200)
    period = 60.0 / entity.tempo_bpm
    since_onset = (t - rng.uniform(0, period)) % period  # time since the last pulse
    envelope = np.minimum(since_onset / 0.005, 1.0) * np.exp(-since_onset / DECAY_S[entity.coarse])
    odd_only = entity.fine % 2 == 0
    tone = np.zeros_like(t)
    for h in range(1, 9):
        if odd_only and h % 2 == 0 or h * f0 >= 0.45 * sr:
            continue
        tone += h ** -ROLLOFF[entity.coarse] * np.sin(2 * np.pi * h * f0 * t + rng.uniform(0, 6.3))
    signal = envelope * tone
    snr_db = rng.uniform(12, 30)
    noise = rng.normal(0, np.sqrt(np.mean(signal**2) / 10 ** (snr_db / 10)), len(t))
    wave = signal + noise
    return (wave * rng.uniform(0.3, 0.9) / np.abs(wave).max()).astype(np.float32)


def encode_audio(wave: np.ndarray, sample_rate: int, audio_format: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, wave, sample_rate, format=audio_format.upper(), subtype="PCM_16")
    return buffer.getvalue()


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[float, ...], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        w, h = (x1 - x0) / 3, (y1 - y0) / 3
        draw.rectangle((x0 + w, y0, x1 - w, y1), fill=fill)
        draw.rectangle((x0, y0 + h, x1, y1 - h), fill=fill)


def draw_image(entity: Entity, rng: np.random.Generator) -> np.ndarray:
    """uint8 [H, W, 3] picture of the entity's state (see module docstring)."""
    width, height = (int(v) for v in rng.integers(64, 97, size=2))
    tint = tuple(int(v) for v in rng.integers(170, 250, size=3))
    image = Image.new("RGB", (width, height), tint)
    draw = ImageDraw.Draw(image)
    side = min(width, height)
    cx = width / 2 + rng.uniform(-0.06, 0.06) * side
    cy = height / 2 + rng.uniform(-0.06, 0.06) * side
    half = rng.uniform(0.2, 0.28) * side
    _draw_shape(draw, SHAPES[entity.coarse], (cx - half, cy - half, cx + half, cy + half),
                COLOURS[entity.fine])
    angle = 2 * np.pi * entity.pitch / PITCH_CLASSES
    dx, dy = 0.4 * side * np.sin(angle), -0.4 * side * np.cos(angle)
    r = 0.05 * side
    draw.ellipse((cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r), fill=(0, 0, 0))
    for bar in range(entity.tempo_index + 1):
        x = 2 + 4 * bar
        draw.rectangle((x, height - 12, x + 2, height - 3), fill=(20, 20, 20))
    pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def log_rows(entity: Entity, rng: np.random.Generator) -> dict[str, list]:
    """Columns of the entity's log rows (time-ordered; the caller shuffles)."""
    n = int(rng.integers(LOG_ROWS[0], LOG_ROWS[1] + 1))
    times = np.cumsum(rng.exponential(1.0, n)) + rng.uniform(0, 100)
    ar = np.zeros(n)
    for i in range(1, n):  # AR(1) wander around the class level
        ar[i] = 0.7 * ar[i - 1] + rng.normal(0, 0.4)
    states, state = [], (entity.fine + int(rng.integers(2))) % len(STATES)
    for _ in range(n):  # sticky chain that prefers the class's own state
        state = state if rng.random() < 0.6 else int(rng.choice([entity.fine % 4, rng.integers(4)]))
        states.append(STATES[state])
    return {
        "key": [entity.key] * n,
        "time": times.tolist(),
        "level": (entity.fine * 0.5 - 2.0 + ar).tolist(),
        "rate": (entity.tempo_bpm / 60 + rng.normal(0, 0.05, n)).tolist(),
        "tone": (entity.f0 + rng.normal(0, 8.0, n)).tolist(),
        "temp": (20 + 3 * entity.coarse + 0.05 * (times - times[0])
                 + rng.normal(0, 0.5, n)).tolist(),
        "events": rng.poisson(1 + entity.coarse, n).astype(np.int64).tolist(),
        "state": states,
    }


def similarity(a: Entity, b: Entity) -> float:
    """Shared-factor similarity in [0, 1] behind the relevance ratings."""
    pitch_gap = min((a.pitch - b.pitch) % 12, (b.pitch - a.pitch) % 12)  # circular, 0..6
    tempo_gap = abs(a.tempo_index - b.tempo_index)  # 0..4
    return (0.45 * (a.fine == b.fine) + 0.2 * (a.coarse == b.coarse)
            + 0.2 * (1 - pitch_gap / 6) + 0.15 * (1 - tempo_gap / 4))


def pick_candidates(query: Entity, entities: list[Entity], rng: np.random.Generator) -> list[int]:
    """Up to CANDIDATES other entities: 4 of the same class, 4 of the same coarse group, rest
    random, so every list spans the whole rating range."""
    fine = np.array([e.fine for e in entities])
    others = np.array([e.index != query.index for e in entities])
    pools = [
        np.flatnonzero(others & (fine == query.fine)),
        np.flatnonzero(others & (fine // 2 == query.coarse) & (fine != query.fine)),
    ]
    chosen: list[int] = []
    for pool in pools:
        chosen += rng.choice(pool, min(4, len(pool)), replace=False).tolist()
    rest = np.setdiff1d(np.flatnonzero(others), chosen)
    chosen += rng.choice(rest, min(CANDIDATES - len(chosen), len(rest)), replace=False).tolist()
    return chosen


def relevance_table(entities: list[Entity], seed: int) -> pa.Table:
    columns: dict[str, list] = {"query": [], "candidate": [], "relevance": []}
    for query in entities:
        rng = entity_rng(seed, query.index, 3)
        for j in pick_candidates(query, entities, rng):
            score = 100 * similarity(query, entities[j]) + rng.normal(0, 4)
            columns["query"].append(query.key)
            columns["candidate"].append(entities[j].key)
            columns["relevance"].append(round(float(np.clip(score, 0, 100)), 1))
    return pa.table(columns)


def missing_views(n: int, fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Exactly round(fraction * n) entities miss each view; none misses all three."""
    rng = np.random.default_rng([seed, 7_777_777])
    count = round(fraction * n)
    masks = {}
    for view in ("audio", "image"):
        masks[view] = np.zeros(n, dtype=bool)
        masks[view][rng.choice(n, count, replace=False)] = True
    has_file = np.flatnonzero(~(masks["audio"] & masks["image"]))
    masks["tabular"] = np.zeros(n, dtype=bool)
    masks["tabular"][rng.choice(has_file, count, replace=False)] = True
    return masks


@dataclass(frozen=True)
class DemoSummary:
    root: str
    entities: int
    audio_files: int
    image_files: int
    log_rows: int
    relevance_rows: int
    seconds: float


def _write_entity_files(
    root: str, entity: Entity, seed: int, missing: dict[str, np.ndarray]
) -> dict[str, str | None]:
    paths: dict[str, str | None] = {"audio": None, "image": None}
    if not missing["audio"][entity.index]:
        wave = synth_audio(entity, entity_rng(seed, entity.index, 1))
        paths["audio"] = f"audio/{entity.key}.{entity.audio_format}"
        data = encode_audio(wave, entity.sample_rate, entity.audio_format)
        fs.write_bytes(fs.join(root, paths["audio"]), data)
    if not missing["image"][entity.index]:
        pixels = draw_image(entity, entity_rng(seed, entity.index, 2))
        paths["image"] = f"images/{entity.key}.png"
        fs.write_bytes(fs.join(root, paths["image"]), encode_png(pixels))
    return paths


def _logs_table(entities: list[Entity], seed: int, missing: np.ndarray) -> pa.Table:
    parts = [log_rows(e, entity_rng(seed, e.index, 4)) for e in entities if not missing[e.index]]
    columns = {name: [v for part in parts for v in part[name]] for name in parts[0]}
    table = pa.table(columns)
    order = np.random.default_rng([seed, 5_555_555]).permutation(table.num_rows)
    return table.take(pa.array(order))  # shuffled: readers must sort by time


def make_demo_archive(
    out: str, *, entities: int = 512, seed: int = 0, missing_fraction: float = 0.1
) -> DemoSummary:
    """Write the demo archive to `out` (local folder or s3:// prefix) and summarise it.

    ~3 s per entity of 16-bit audio (about 0.1 MB) plus a 10-25 KB PNG; 512 entities are
    about 60 MB.
    """
    if entities < 2:
        raise ValueError(f"entities must be >= 2 (got {entities})")
    if not 0 <= missing_fraction <= 0.5:
        raise ValueError(f"missing_fraction must be within [0, 0.5] (got {missing_fraction})")
    start = time.perf_counter()
    root = fs.normalize(out)
    population = [make_entity(seed, i) for i in range(entities)]
    missing = missing_views(entities, missing_fraction, seed)
    paths = [_write_entity_files(root, e, seed, missing) for e in population]
    manifest = pa.table({
        "key": [e.key for e in population],
        "audio": pa.array([p["audio"] for p in paths], type=pa.string()),
        "image": pa.array([p["image"] for p in paths], type=pa.string()),
        "label": [e.fine for e in population],
        "label_coarse": [e.coarse for e in population],
        "label_pitch": [e.pitch for e in population],
        "label_tempo": [e.tempo_bpm for e in population],
    })
    logs = _logs_table(population, seed, missing["tabular"])
    relevance = relevance_table(population, seed)
    fs.write_parquet(fs.join(root, "manifest.parquet"), manifest)
    fs.write_parquet(fs.join(root, "logs.parquet"), logs)
    fs.write_parquet(fs.join(root, "relevance.parquet"), relevance)
    return DemoSummary(
        root=root,
        entities=entities,
        audio_files=int((~missing["audio"]).sum()),
        image_files=int((~missing["image"]).sum()),
        log_rows=logs.num_rows,
        relevance_rows=relevance.num_rows,
        seconds=time.perf_counter() - start,
    )
