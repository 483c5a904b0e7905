"""The music corpus: real melodies played by real sampled instruments.

Source material (see docs/corpora-music.md):

- instruments: 24 General MIDI programs in 8 families from the MuseScore General SoundFont
  (Debian `musescore-general-soundfont`), rendered in-process by FluidSynth (`libfluidsynth3`
  through pyfluidsynth) with its reverb and chorus off;
- melodies: the opening phrases of Bach chorale soprano lines and Essen folk songs from the
  corpus that ships inside music21, each with its key (tonic and mode) from music21's key
  analysis, confirmed by the key signature.

Every entity plays one melody on one instrument, transposed to a drawn key, at a drawn tempo
and loudness, then goes through the rough edges of real recordings (room reverberation,
background noise, level). Views: the audio (16 kHz mono WAV), a piano roll of the same notes
(PNG) and the note events (logs.parquet). Labels: instrument (`label`), family, key, mode,
tempo (float: a regression target) and melody.

Determinism: every draw comes from `entity_rng(seed, index, stream)` and every entity is
rendered by a fresh FluidSynth instance (a reused one carries voice state from the previous
entity into the next and changes its samples), so equal seeds give equal archives whatever
`workers` is.
"""

from __future__ import annotations

import ctypes
import io
import json
import multiprocessing as mp
import os
import sysconfig
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from raysys.corpora.common import (
    CorpusSummary,
    add_noise,
    channel,
    encode_audio,
    entity_rng,
    graded_relevance,
    level,
    missing_masks,
    room_reverb,
    write_tables,
)
from raysys.corpora.system import CorpusUnavailable, ensure_debian_packages
from raysys.data import fs

SOUNDFONT = "/usr/share/sounds/sf3/MuseScore_General_Full.sf3"
LIBFLUIDSYNTH = f"/usr/lib/{sysconfig.get_config_var('MULTIARCH') or 'x86_64-linux-gnu'}" \
                "/libfluidsynth.so.3"
DEBIAN_PACKAGES = {"libfluidsynth3": LIBFLUIDSYNTH, "musescore-general-soundfont": SOUNDFONT}

SAMPLE_RATE = 16000
BLOCK = 64  # FluidSynth renders in 64-frame blocks: events land on block boundaries
TEMPO_RANGE = (60.0, 180.0)  # BPM, log-uniform; a beat = 2 of the commonest note value
SECONDS_RANGE = (3.0, 5.0)
MIN_NOTES, MAX_NOTES = 6, 16  # notes a clip plays (fewer only when 6 need over 5 s)
RELEASE_S = 0.35  # room left after the last note for its release
VELOCITY_RANGE = (55, 110)
ROLL_LOW, ROLL_PITCHES, ROLL_COLUMNS = 36, 64, 128  # piano roll: MIDI 36-99 x 128 columns
ROLL_SECONDS = 5.12  # the roll's time span: 40 ms a column, the same for every entity
PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
MODES = ("major", "minor")
RELEVANCE_WEIGHTS = {"instrument": 0.4, "family": 0.2, "melody": 0.25, "tonic": 0.15}
DEFAULT_WORKERS = 2
PROGRESS_EVERY = 100
CACHE_VERSION = 2  # bump when the melody extraction changes


@dataclass(frozen=True)
class Instrument:
    """A General MIDI program and the register (MIDI notes) it plays the melody in."""

    name: str
    family: str
    program: int
    low: int
    high: int


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument("grand piano", "piano", 0, 48, 84),
    Instrument("electric piano", "piano", 4, 48, 84),
    Instrument("harpsichord", "piano", 6, 48, 84),
    Instrument("glockenspiel", "chromatic percussion", 9, 72, 99),
    Instrument("vibraphone", "chromatic percussion", 11, 53, 89),
    Instrument("marimba", "chromatic percussion", 12, 48, 84),
    Instrument("drawbar organ", "organ", 16, 48, 84),
    Instrument("church organ", "organ", 19, 48, 84),
    Instrument("accordion", "organ", 21, 53, 84),
    Instrument("nylon guitar", "guitar", 24, 40, 76),
    Instrument("clean electric guitar", "guitar", 27, 40, 79),
    Instrument("distortion guitar", "guitar", 30, 40, 79),
    Instrument("violin", "strings", 40, 55, 93),
    Instrument("cello", "strings", 42, 36, 72),
    Instrument("harp", "strings", 46, 43, 91),
    Instrument("trumpet", "brass", 56, 55, 82),
    Instrument("trombone", "brass", 57, 40, 72),
    Instrument("french horn", "brass", 60, 41, 77),
    Instrument("alto sax", "reed", 65, 49, 81),
    Instrument("oboe", "reed", 68, 58, 91),
    Instrument("clarinet", "reed", 71, 50, 89),
    Instrument("flute", "pipe", 73, 60, 96),
    Instrument("recorder", "pipe", 74, 60, 96),
    Instrument("pan flute", "pipe", 75, 60, 93),
)
FAMILIES = tuple(dict.fromkeys(i.family for i in INSTRUMENTS))


# -- melodies from the music21 corpus ---------------------------------------------------------

@dataclass(frozen=True)
class Melody:
    """The opening of one corpus melody: notes as (onset, duration) in quarter lengths and
    MIDI pitch, the piece's tonic pitch class and mode, and the beat in quarter lengths (two
    of the opening's commonest note value, so every melody moves at a similar note rate for a
    tempo, whatever note values its source happened to be written in)."""

    id: str
    tonic: int
    mode: str
    beat: float
    notes: tuple[tuple[float, float, int], ...]


CHORALES = 120  # Riemenschneider chorales, soprano line
ESSEN = ("altdeu10", "ballad10", "boehme10", "dva0", "erk10", "fink0", "han1", "irl",
         "kinder0", "lot", "lux", "zuccal0")
ESSEN_PER_COLLECTION = 16


def melody_sources() -> list[tuple[str, int | None]]:
    """The fixed list of (corpus path, tune number) candidates; the list never depends on the
    seed, so a melody id means the same notes in every build."""
    from music21 import corpus

    chorales = corpus.chorales.Iterator(numberingSystem="riemenschneider",
                                        returnType="filename")
    sources: list[tuple[str, int | None]] = [(str(p), None) for p in list(chorales)[:CHORALES]]
    for name in ESSEN:
        sources += [(f"essenFolksong/{name}", n) for n in range(1, ESSEN_PER_COLLECTION + 1)]
    return sources


def _melody_id(path: str, number: int | None) -> str:
    stem = path.rsplit("/", 1)[-1]
    return f"bach-{stem}" if number is None else f"essen-{stem}-{number}"


def extract_melody(score, melody_id: str) -> Melody | None:
    """The first notes of the top part, or None when the key is doubtful (the analysed key's
    signature differs from the written one) or the opening is too short."""
    from music21 import key

    part = score.parts[0] if score.parts else score
    analysed = part.analyze("key")
    written = part.recurse().getElementsByClass(key.KeySignature).first()
    if analysed.mode not in MODES or (written is not None and written.sharps != analysed.sharps):
        return None
    notes: list[tuple[float, float, int]] = []
    for element in part.stripTies().flatten().notes:
        length = float(element.quarterLength)
        if length <= 0:  # grace notes
            continue
        pitch = max(element.pitches, key=lambda p: p.midi).midi  # top note of a chord
        notes.append((float(element.offset), length, int(pitch)))
        if len(notes) == MAX_NOTES + 8:
            break
    if len(notes) < 10:
        return None
    start = notes[0][0]
    notes = [(round(o - start, 4), round(d, 4), p) for o, d, p in notes]
    commonest = Counter(d for _, d, _ in notes[:MAX_NOTES]).most_common(1)[0][0]
    beat = 2 * commonest  # e.g. eighth-note tunes in quarter beats: 2-6 notes/s at 60-180 BPM
    return Melody(melody_id, analysed.tonic.pitchClass, analysed.mode, beat, tuple(notes))


def _cache_path() -> Path:
    import music21

    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raysys"
    return base / f"music-melodies-m21-{music21.__version__}-v{CACHE_VERSION}.json"


def _parse_melodies() -> list[Melody]:
    from music21 import corpus

    melodies = []
    for path, number in melody_sources():
        try:
            score = corpus.parse(path, number=number) if number else corpus.parse(path)
        except Exception as e:  # music21 raises many kinds; one bad tune must not stop a build
            print(f"[corpus music] skipping {path} #{number}: {e}", flush=True)
            continue
        melody = extract_melody(score, _melody_id(path, number))
        if melody is not None:
            melodies.append(melody)
    return melodies


@lru_cache(maxsize=1)
def load_melodies() -> tuple[Melody, ...]:
    """The melody pool, parsed once and cached in ~/.cache/raysys (music21 parsing takes
    ~30 s; the cache file is keyed by the music21 version)."""
    path = _cache_path()
    if path.exists():
        rows = json.loads(path.read_text())
        return tuple(Melody(r["id"], r["tonic"], r["mode"], r["beat"],
                            tuple(tuple(n) for n in r["notes"])) for r in rows)
    start = time.perf_counter()
    print("[corpus music] parsing melodies from the music21 corpus (once; cached in "
          f"{path})", flush=True)
    melodies = _parse_melodies()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps([asdict(m) for m in melodies]))
    tmp.replace(path)  # atomic: a concurrent build never reads half a file
    print(f"[corpus music] {len(melodies)} melodies in {time.perf_counter() - start:.0f} s",
          flush=True)
    return tuple(melodies)


# -- what each entity plays -------------------------------------------------------------------

@dataclass(frozen=True)
class Note:
    onset: float     # seconds, on the 4 ms grid of FluidSynth's blocks
    duration: float  # seconds, same grid
    pitch: int       # MIDI
    velocity: int


@dataclass(frozen=True)
class Plan:
    """One entity: its labels and the notes the audio, image and logs all show."""

    index: int
    instrument: Instrument
    melody: str
    tonic: str
    mode: str
    tempo: float
    seconds: float
    notes: tuple[Note, ...]

    @property
    def key(self) -> str:
        return f"music-{self.index:05d}"


def _grid(seconds: float) -> float:
    """Round to a FluidSynth block (64 frames = 4 ms): events between blocks would land on the
    next boundary anyway, and logs must give the times the audio really has."""
    return round(seconds * SAMPLE_RATE / BLOCK) * BLOCK / SAMPLE_RATE


def _register(pitches: np.ndarray, instrument: Instrument) -> np.ndarray:
    """Shift by octaves (the key stays) so the phrase sits in the instrument's range."""
    centre = (instrument.low + instrument.high) / 2
    pitches = pitches + 12 * round((centre - float(np.median(pitches))) / 12)
    for _ in range(4):
        if pitches.max() > instrument.high and pitches.min() - 12 >= instrument.low:
            pitches = pitches - 12
        elif pitches.min() < instrument.low and pitches.max() + 12 <= instrument.high:
            pitches = pitches + 12
    return np.clip(pitches, ROLL_LOW, ROLL_LOW + ROLL_PITCHES - 1)


def plan_entity(seed: int, index: int, melodies: Sequence[Melody]) -> Plan:
    """Draw instrument, melody, key, tempo, length and dynamics; lay out the notes that fit."""
    rng = entity_rng(seed, index, 0)
    instrument = INSTRUMENTS[int(rng.integers(len(INSTRUMENTS)))]
    melody = melodies[int(rng.integers(len(melodies)))]
    tonic = int(rng.integers(12))
    tempo = round(float(np.exp(rng.uniform(*np.log(TEMPO_RANGE)))), 2)
    limit = float(rng.uniform(*SECONDS_RANGE))
    base_velocity = int(rng.integers(VELOCITY_RANGE[0], VELOCITY_RANGE[1] + 1))
    articulation = float(rng.uniform(0.7, 0.97))  # staccato .. legato
    seconds_per_ql = 60.0 / (tempo * melody.beat)
    shift = (tonic - melody.tonic) % 12
    shift -= 12 * (shift > 6)
    # a phrase needs a few notes: stretch a short draw (up to the longest clip) to fit MIN_NOTES
    needed = melody.notes[MIN_NOTES - 1][0] * seconds_per_ql + RELEASE_S + 0.1
    limit = max(limit, min(needed, SECONDS_RANGE[1]))
    raw = [n for n in melody.notes if n[0] * seconds_per_ql < limit - RELEASE_S][:MAX_NOTES]
    pitches = _register(np.array([p for _, _, p in raw]) + shift, instrument)
    jitter = rng.normal(0.0, 0.008, len(raw))
    velocities = np.clip(base_velocity + rng.normal(0, 6, len(raw)), 1, 127).astype(int)
    onsets: list[float] = []
    for (onset, _, _), j in zip(raw, jitter, strict=True):  # humanised, never out of order
        onsets.append(max(_grid(max(0.0, onset * seconds_per_ql + j)) + 0.02,
                          onsets[-1] + 0.02 if onsets else 0.0))
    notes = []
    lengths = [length for _, length, _ in raw]
    for i, (length, pitch, velocity) in enumerate(zip(lengths, pitches, velocities, strict=True)):
        end = min(onsets[i] + length * seconds_per_ql * articulation, limit - RELEASE_S,
                  onsets[i + 1] - 0.004 if i + 1 < len(raw) else np.inf)
        notes.append(Note(round(onsets[i], 3), _grid(max(end - onsets[i], 0.02)), int(pitch),
                          int(velocity)))
    last_end = notes[-1].onset + notes[-1].duration
    seconds = float(np.clip(last_end + RELEASE_S, *SECONDS_RANGE))
    return Plan(index, instrument, melody.id, PITCH_CLASSES[tonic], melody.mode, tempo,
                round(seconds, 3), tuple(notes))


# -- rendering ------------------------------------------------------------------------------

class Renderer:
    """FluidSynth in this process. A holder synth keeps every program used so far selected, so
    its decompressed samples stay in FluidSynth's sample cache; each entity is then rendered
    by a fresh synth (0.03 s to make) whose output depends on nothing rendered before."""

    SETTINGS = {"synth.dynamic-sample-loading": 1, "synth.reverb.active": 0,
                "synth.chorus.active": 0, "synth.midi-channels": 32}

    def __init__(self, soundfont: str = SOUNDFONT) -> None:
        try:
            import fluidsynth
        except ImportError as e:  # pyfluidsynth raises ImportError without libfluidsynth
            raise CorpusUnavailable(f"corpus 'music': pyfluidsynth unusable: {e}") from None
        self._fluidsynth = fluidsynth
        self._write_float = fluidsynth.cfunc(
            "fluid_synth_write_float", ctypes.c_int, ("synth", ctypes.c_void_p, 1),
            ("len", ctypes.c_int, 1), ("lbuf", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1),
            ("lincr", ctypes.c_int, 1), ("rbuf", ctypes.c_void_p, 1),
            ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1))
        self.soundfont = soundfont
        self._holder = self._synth()
        self._holder_font = self._holder.sfload(soundfont)
        if self._holder_font < 0:
            raise CorpusUnavailable(f"corpus 'music': FluidSynth cannot load {soundfont}")
        self._held: list[int] = []

    def _synth(self):
        return self._fluidsynth.Synth(gain=0.5, samplerate=float(SAMPLE_RATE), **self.SETTINGS)

    def _hold(self, program: int) -> None:
        if program not in self._held:
            self._holder.program_select(len(self._held), self._holder_font, 0, program)
            self._held.append(program)

    def _frames(self, synth, count: int) -> np.ndarray:
        """`count` stereo frames as float32 [count, 2]; float output, so no int16 dither
        (whose position carries over between calls)."""
        buffer = np.zeros(2 * count, dtype=np.float32)
        address = buffer.ctypes.data
        self._write_float(synth.synth, count, address, 0, 2, address, 1, 2)
        return buffer.reshape(count, 2)

    def render(self, plan: Plan) -> np.ndarray:
        """The dry mono signal of the plan's notes, `plan.seconds` long."""
        self._hold(plan.instrument.program)
        synth = self._synth()
        try:
            font = synth.sfload(self.soundfont)
            synth.program_select(0, font, 0, plan.instrument.program)
            events = sorted([(round(n.onset * SAMPLE_RATE), 1, n.pitch, n.velocity)
                             for n in plan.notes]
                            + [(round((n.onset + n.duration) * SAMPLE_RATE), 0, n.pitch, 0)
                               for n in plan.notes])
            total = -(-round(plan.seconds * SAMPLE_RATE) // BLOCK) * BLOCK
            chunks, position = [], 0
            for frame, is_on, pitch, velocity in events:
                frame = min(frame - frame % BLOCK, total)
                if frame > position:
                    chunks.append(self._frames(synth, frame - position))
                    position = frame
                if is_on:
                    synth.noteon(0, pitch, velocity)
                else:
                    synth.noteoff(0, pitch)
            chunks.append(self._frames(synth, total - position))
        finally:
            synth.delete()
        stereo = np.concatenate(chunks)[: round(plan.seconds * SAMPLE_RATE)]
        return stereo.mean(axis=1).astype(np.float32)


def finish_audio(dry: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rough edges of a real recording: a microphone, a room, background noise, a level."""
    wave = room_reverb(channel(dry, SAMPLE_RATE, rng), SAMPLE_RATE, rng)
    wave = add_noise(wave, rng)
    return level(wave, rng)


def piano_roll(plan: Plan) -> np.ndarray:
    """uint8 [64 pitches (high at the top), 128 columns of 40 ms]; brightness = velocity,
    each note's first column brighter so repeated notes stay apart."""
    roll = np.zeros((ROLL_PITCHES, ROLL_COLUMNS), dtype=np.uint8)
    per_column = ROLL_SECONDS / ROLL_COLUMNS
    for note in plan.notes:
        row = ROLL_PITCHES - 1 - (note.pitch - ROLL_LOW)
        first = int(note.onset / per_column)
        last = max(first + 1, int(np.ceil((note.onset + note.duration) / per_column)))
        shade = 60 + int(140 * note.velocity / 127)
        roll[row, first:min(last, ROLL_COLUMNS)] = shade
        roll[row, min(first, ROLL_COLUMNS - 1)] = min(255, shade + 55)
    return roll


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# -- the archive ----------------------------------------------------------------------------

_RENDERER: Renderer | None = None


def _renderer() -> Renderer:
    """One Renderer per process (loading the SoundFont's header and samples once)."""
    global _RENDERER
    if _RENDERER is None:
        _RENDERER = Renderer()
    return _RENDERER


def _fresh_renderer() -> None:
    """Worker start: never reuse a synth inherited from the parent process."""
    global _RENDERER
    _RENDERER = None


def _write_entity(job: tuple[str, int, Plan, bool, bool]) -> tuple[str | None, str | None]:
    """Render and write the audio and image files of one entity (runs in a worker)."""
    root, seed, plan, has_audio, has_image = job
    audio = image = None
    if has_audio:
        wave = finish_audio(_renderer().render(plan), entity_rng(seed, plan.index, 1))
        audio = f"audio/{plan.key}.wav"
        fs.write_bytes(fs.join(root, audio), encode_audio(wave, SAMPLE_RATE))
    if has_image:
        image = f"images/{plan.key}.png"
        fs.write_bytes(fs.join(root, image), _png(piano_roll(plan)))
    return audio, image


def _write_files(root: str, seed: int, plans: list[Plan], masks: dict[str, np.ndarray],
                 workers: int, start: float) -> list[tuple[str | None, str | None]]:
    """All entity files, in `workers` processes (results in entity order either way)."""
    jobs = [(root, seed, p, not masks["audio"][p.index], not masks["image"][p.index])
            for p in plans]
    if workers > 1:
        # fork, not spawn: spawn re-runs the caller's script in every worker, which breaks
        # scripts without a __main__ guard; workers touch no torch/Ray state of the parent.
        pool = mp.get_context("fork").Pool(workers, initializer=_fresh_renderer)
        results = pool.imap(_write_entity, jobs, chunksize=4)
    else:
        pool, results = None, map(_write_entity, jobs)
    paths = []
    try:
        for done, result in enumerate(results, 1):
            paths.append(result)
            if done % PROGRESS_EVERY == 0 or done == len(jobs):
                print(f"[corpus music] {done}/{len(jobs)} entities rendered "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    finally:
        if pool is not None:
            pool.terminate()
    return paths


def _logs(plans: list[Plan], missing: np.ndarray) -> pd.DataFrame:
    """The tabular view: one row per note (a MIDI-like event log)."""
    rows = []
    for plan in plans:
        if missing[plan.index]:
            continue
        previous = None
        for note in plan.notes:
            rows.append({"key": plan.key, "time": note.onset, "pitch": note.pitch,
                         "duration": note.duration, "velocity": note.velocity,
                         "interval": None if previous is None else note.pitch - previous})
            previous = note.pitch
    frame = pd.DataFrame(rows)
    frame["interval"] = frame["interval"].astype("Int64")  # null on each first note
    return frame


def _manifest(plans: list[Plan], paths: list[tuple[str | None, str | None]]) -> pd.DataFrame:
    """Keys, file paths and labels; tempo is float (a continuous factor), the rest strings."""
    return pd.DataFrame({
        "key": [p.key for p in plans],
        "audio": pd.array([a for a, _ in paths], dtype="string"),
        "image": pd.array([i for _, i in paths], dtype="string"),
        "label": [p.instrument.name for p in plans],
        "label_family": [p.instrument.family for p in plans],
        "label_key": [p.tonic for p in plans],
        "label_mode": [p.mode for p in plans],
        "label_tempo": np.array([p.tempo for p in plans], dtype=np.float64),
        "label_melody": [p.melody for p in plans],
    })


def make_music_corpus(out: str, *, entities: int = 600, seed: int = 0,
                      missing_fraction: float = 0.1, workers: int | None = None
                      ) -> CorpusSummary:
    """Write the music corpus to `out` (local folder or s3:// prefix) and summarise it.

    Installs libfluidsynth3 and the MuseScore General SoundFont when missing (as root), else
    raises CorpusUnavailable. `workers` rendering processes (default 2) never change the
    result.
    """
    if entities < 2:
        raise ValueError(f"entities must be >= 2 (got {entities})")
    start = time.perf_counter()
    ensure_debian_packages(DEBIAN_PACKAGES, corpus="music")
    root = fs.normalize(out)
    melodies = load_melodies()
    plans = [plan_entity(seed, i, melodies) for i in range(entities)]
    masks = missing_masks(entities, missing_fraction, seed, ("audio", "image", "tabular"))
    workers = max(1, min(DEFAULT_WORKERS if workers is None else workers, entities // 16 or 1))
    paths = _write_files(root, seed, plans, masks, workers, start)
    manifest = _manifest(plans, paths)
    logs = _logs(plans, masks["tabular"])
    attributes = pd.DataFrame({
        "key": manifest["key"], "instrument": manifest["label"],
        "family": manifest["label_family"], "melody": manifest["label_melody"],
        "tonic": manifest["label_key"]})
    relevance = graded_relevance(attributes, RELEVANCE_WEIGHTS, seed=seed)
    write_tables(root, manifest, logs, relevance, seed)
    labels = [c for c in manifest.columns if c.startswith("label")]
    return CorpusSummary(
        name="music", root=root, entities=entities,
        views={"audio": int((~masks["audio"]).sum()), "image": int((~masks["image"]).sum()),
               "tabular": int((~masks["tabular"]).sum())},
        labels={c: int(manifest[c].nunique()) for c in labels},
        log_rows=len(logs), relevance_rows=relevance.num_rows,
        seconds=time.perf_counter() - start,
        notes=[f"soundfont {SOUNDFONT}", f"{len(melodies)} melodies from the music21 corpus",
               f"{workers} rendering process(es)"])
