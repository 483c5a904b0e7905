"""The speech corpus: twelve recorded Festival voices (7 languages) saying numbers 0-10.

    raysys make-corpus speech OUT [--entities N] [--seed S] [--missing-fraction F]

Every entity is one voice saying a string of WORDS numbers, like the connected-digit
recordings of TIDIGITS (docs/corpora-speech.md). The voices are diphone, HTS and cluster-unit
voices built from recordings of real speakers, so the speaker label is carried by a real
voice; the numbers are concepts shared across languages (`label_word`, the first number said:
"seven" is "sette", "sedm", "seitsemän", ...). Several words per recording, as in real
archives, mean two crops of one recording share the voice and the room but not what is said.
Festival is deterministic, so
each entity gets its own speaking rate and pitch, then the rough edges of real recordings
(leading/trailing silence, room reverberation, background noise, level).

Speed: one festival process renders a chunk of up to CHUNK utterances of one voice from a
generated Scheme script (start-up is ~0.2 s per process); chunks run in `workers` processes.
Determinism: every draw comes from `entity_rng(seed, index, stream)` and chunks are fixed
by the entity plan, so the archive does not depend on `workers`.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from scipy.signal import resample_poly

from raysys.corpora import common
from raysys.corpora.system import ensure_debian_packages
from raysys.data import fs

SAMPLE_RATE = 16_000
WORDS_PER_UTTERANCE = 5
CHUNK = 25  # utterances per festival process
FESTIVAL_TIMEOUT_S = 180
RATE_RANGE = (0.8, 1.3)  # duration stretch: > 1 is slower
SEMITONE_RANGE = (-2.0, 2.0)  # pitch shift
SILENCE_RANGE_S = (0.05, 0.35)  # leading / trailing silence kept
PAUSES = frozenset({"pau", "#", "_", "sil", "h#"})
RELEVANCE_WEIGHTS = {"speaker": 0.45, "word": 0.3, "language": 0.15, "gender": 0.1}


@dataclass(frozen=True)
class Voice:
    """A Festival voice: `engine` decides how rate and pitch can be varied (see _controls)."""

    name: str  # festival's voice name, without the voice_ prefix; the speaker label
    language: str  # ISO 639-1
    gender: str  # female | male
    package: str
    encoding: str  # what festival's text front end of this language reads
    engine: str  # diphone | hts | clunits

    @property
    def probe(self) -> str:
        """A file the package installs (ensure_debian_packages checks it)."""
        folder = "us" if self.name.startswith("cmu_us_") else VOICE_LANGUAGE_DIRS[self.language]
        return f"/usr/share/festival/voices/{folder}/{self.name}/festvox/{self.name}.scm"


VOICE_LANGUAGE_DIRS = {"en": "english", "it": "italian", "cs": "czech", "fi": "finnish",
                       "ca": "catalan", "ru": "russian", "hi": "hindi"}

VOICES: tuple[Voice, ...] = (
    Voice("kal_diphone", "en", "male", "festvox-kallpc16k", "utf-8", "diphone"),
    Voice("ked_diphone", "en", "male", "festvox-kdlpc16k", "utf-8", "diphone"),
    Voice("cmu_us_slt_arctic_hts", "en", "female", "festvox-us-slt-hts", "utf-8", "hts"),
    Voice("lp_diphone", "it", "female", "festvox-italp16k", "latin-1", "diphone"),
    Voice("pc_diphone", "it", "male", "festvox-itapc16k", "latin-1", "diphone"),
    Voice("czech_dita", "cs", "female", "festvox-czech-dita", "iso-8859-2", "diphone"),
    Voice("czech_machac", "cs", "male", "festvox-czech-machac", "iso-8859-2", "diphone"),
    Voice("suo_fi_lj_diphone", "fi", "female", "festvox-suopuhe-lj", "latin-1", "diphone"),
    Voice("hy_fi_mv_diphone", "fi", "male", "festvox-suopuhe-mv", "latin-1", "diphone"),
    Voice("upc_ca_ona_hts", "ca", "female", "festvox-ca-ona-hts", "latin-1", "hts"),
    Voice("msu_ru_nsh_clunits", "ru", "male", "festvox-ru", "utf-8", "clunits"),
    Voice("hindi_NSK_diphone", "hi", "male", "festvox-hi-nsk", "utf-8", "diphone"),
)

# Packages the voices need besides their own: festival itself and Hindi's front end (the
# festvox-hi-nsk voice only Recommends it, and fails without hindi_phones.scm).
SUPPORT_PACKAGES = {"festival": "/usr/bin/festival",
                    "festival-hi": "/usr/share/festival/hindi_scm/hindi_phones.scm"}

# The concept ids (label_word: the first number said) and how each language writes them.
CONCEPTS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
            "ten")
WORDS: dict[str, tuple[str, ...]] = {
    "en": CONCEPTS,
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove",
           "dieci"),
    "cs": ("nula", "jedna", "dva", "tři", "čtyři", "pět", "šest", "sedm", "osm", "devět",
           "deset"),
    "fi": ("nolla", "yksi", "kaksi", "kolme", "neljä", "viisi", "kuusi", "seitsemän",
           "kahdeksan", "yhdeksän", "kymmenen"),
    "ca": ("zero", "un", "dos", "tres", "quatre", "cinc", "sis", "set", "vuit", "nou", "deu"),
    "ru": ("ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь",
           "девять", "десять"),
    "hi": ("शून्य", "एक", "दो", "तीन", "चार", "पाँच", "छह", "सात", "आठ", "नौ", "दस"),
}


class VoiceFailed(RuntimeError):
    """A festival voice did not render its utterances (the message names voice and error)."""


def required_packages() -> dict[str, str]:
    """Debian package -> a file it installs, for festival and every voice used."""
    return {**SUPPORT_PACKAGES, **{v.package: v.probe for v in VOICES}}


# -- the entity plan ------------------------------------------------------------------------

@dataclass(frozen=True)
class Utterance:
    """One entity: who says which numbers, how fast and how high, and how festival is asked.

    `rate` is the realised duration stretch and `semitones` the realised pitch shift. Diphone
    voices take both natively (Duration_Stretch, F0 targets scaled before waveform synthesis).
    HTS and cluster-unit voices ignore both (HTS's own speed option `-r` mostly lengthens the
    pauses, which are trimmed), so their pitch comes from a tape-speed resample by `tape` =
    2**(semitones/12), which also shifts the formants and shortens the word by `tape`: their
    rate is 1/tape, coupled to the pitch.
    """

    index: int
    voice: Voice
    concepts: tuple[int, ...]
    rate: float
    semitones: float
    festival_stretch: float
    f0_factor: float  # applied to festival's F0 targets (diphone voices)
    tape: float  # resample speed-up after synthesis

    @property
    def key(self) -> str:
        return f"speech-{self.index:05d}"

    @property
    def text(self) -> str:
        return " ".join(WORDS[self.voice.language][c] for c in self.concepts)


def _controls(voice: Voice, rate: float, semitones: float) -> tuple[float, float, float, float]:
    """(realised rate, festival stretch, F0 target factor, tape factor) for a voice engine."""
    shift = float(2 ** (semitones / 12))
    if voice.engine == "diphone":
        return rate, rate, shift, 1.0
    return 1.0 / shift, 1.0, 1.0, shift


def plan(entities: int, seed: int) -> list[Utterance]:
    """Entity i is spoken by voice i mod 12 (balanced speakers); its numbers, rate and pitch
    come from entity_rng(seed, i, 0), so entity i does not depend on `entities`."""
    out = []
    for i in range(entities):
        voice = VOICES[i % len(VOICES)]
        rng = common.entity_rng(seed, i, 0)
        concepts = tuple(int(c) for c in rng.integers(len(CONCEPTS), size=WORDS_PER_UTTERANCE))
        rate = float(rng.uniform(*RATE_RANGE))
        semitones = float(rng.uniform(*SEMITONE_RANGE))
        realised, stretch, f0, tape = _controls(voice, rate, semitones)
        out.append(Utterance(i, voice, concepts, round(realised, 4), round(semitones, 3),
                             stretch, f0, tape))
    return out


# -- festival -------------------------------------------------------------------------------

# `Utterance` does not evaluate its arguments, hence the eval (as festival's SayText does);
# names are prefixed so as not to clash with any voice's own definitions.
_PRELUDE = """(voice_{voice})
(set! speech_f0_factor 1.0)
(define (speech_scale_targets utt)
  (mapcar (lambda (tg) (item.set_feat tg "f0" (* speech_f0_factor (item.feat tg "f0"))))
          (utt.relation.items utt 'Target))
  utt)
(set! speech_wave_synth Wave_Synth)
(define (Wave_Synth utt) (speech_scale_targets utt) (speech_wave_synth utt))
(define (speech_say speech_idx speech_text speech_stretch speech_f0 speech_path)
  (set! speech_f0_factor speech_f0)
  (Parameter.set 'Duration_Stretch speech_stretch)
  (set! speech_utt (utt.synth (eval (list 'Utterance 'Text speech_text))))
  (utt.save.wave speech_utt speech_path 'riff)
  (mapcar (lambda (speech_seg)
            (format t "SEG %d %s %f %s\\n" speech_idx (item.name speech_seg)
                    (item.feat speech_seg "end")
                    (item.feat speech_seg "R:SylStructure.parent.stress")))
          (utt.relation.items speech_utt 'Segment))
  (format t "DONE %d\\n" speech_idx))
"""


def festival_script(chunk: list[Utterance], folder: str) -> bytes:
    """The Scheme program that renders `chunk` (one voice) into folder/<index>.wav and
    prints every phone segment; encoded as the voice's text front end expects."""
    voice = chunk[0].voice
    lines = [_PRELUDE.format(voice=voice.name)]
    for u in chunk:
        lines.append(f'(speech_say {u.index} "{u.text}" {u.festival_stretch:.6f} '
                     f'{u.f0_factor:.6f} "{folder}/{u.index}.wav")\n')
    return "".join(lines).encode(voice.encoding)


def run_festival(chunk: list[Utterance], folder: str) -> dict[int, list[tuple[str, float, int]]]:
    """Render a chunk; returns index -> [(phone, end s, stress)] at the voice's native timing.
    Raises VoiceFailed naming the voice with festival's last error lines."""
    voice = chunk[0].voice
    script = Path(folder) / "render.scm"
    script.write_bytes(festival_script(chunk, folder))
    try:
        done = subprocess.run(["festival", "-b", str(script)], capture_output=True,
                              timeout=FESTIVAL_TIMEOUT_S, cwd=folder)
    except subprocess.TimeoutExpired:
        raise VoiceFailed(f"festival voice {voice.name}: no result within "
                          f"{FESTIVAL_TIMEOUT_S} s for {len(chunk)} utterances") from None
    stdout = done.stdout.decode(voice.encoding, errors="replace")
    segments: dict[int, list[tuple[str, float, int]]] = {u.index: [] for u in chunk}
    finished = set()
    for line in stdout.splitlines():
        parts = line.split()
        if len(parts) == 5 and parts[0] == "SEG":
            segments[int(parts[1])].append((parts[2], float(parts[3]), _int(parts[4])))
        elif len(parts) == 2 and parts[0] == "DONE":
            finished.add(int(parts[1]))
    if done.returncode != 0 or len(finished) < len(chunk):
        tail = " | ".join(done.stderr.decode(errors="replace").strip().splitlines()[-3:])
        raise VoiceFailed(f"festival voice {voice.name} failed (exit {done.returncode}, "
                          f"{len(finished)}/{len(chunk)} utterances): {tail or 'no message'}")
    return segments


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 0


# -- from festival's output to an entity ----------------------------------------------------

def to_16k(wave: np.ndarray, native_rate: int, tape: float) -> np.ndarray:
    """Resample to 16 kHz with a polyphase filter (bounded memory); a tape factor > 1 plays
    the native wave faster (pitch and formants up, duration down)."""
    ratio = Fraction(SAMPLE_RATE / (native_rate * tape)).limit_denominator(2000)
    if ratio == 1:
        return wave.astype(np.float32)
    return resample_poly(wave, ratio.numerator, ratio.denominator).astype(np.float32)


def trim_window(segments: list[tuple[str, float, int]], total_s: float,
                rng: np.random.Generator) -> tuple[float, float]:
    """(start, end) seconds to keep: the speech plus a random 0.05-0.35 s of the synthesiser's
    leading and trailing pause (voices pad very differently, up to 1.4 s, which would give the
    speaker away by silence length alone)."""
    names = [name for name, _, _ in segments]
    ends = [end for _, end, _ in segments]
    lead = next((k for k, n in enumerate(names) if n not in PAUSES), 0)
    tail = next((k for k in range(len(names) - 1, -1, -1) if names[k] not in PAUSES),
                len(names) - 1)
    speech_start = ends[lead - 1] if lead > 0 else 0.0
    speech_end = min(ends[tail], total_s) if names else total_s
    start = max(0.0, speech_start - rng.uniform(*SILENCE_RANGE_S))
    end = min(total_s, speech_end + rng.uniform(*SILENCE_RANGE_S))
    return start, end


def phone_rows(key: str, segments: list[tuple[str, float, int]],
               window: tuple[float, float]) -> dict[str, list]:
    """The tabular view: one row per phone inside the kept window, times in output seconds."""
    rows: dict[str, list] = {"key": [], "time": [], "duration": [], "phone": [], "stress": []}
    begin = 0.0
    for name, end, stress in segments:
        lo, hi = max(begin, window[0]), min(end, window[1])
        begin = end
        if hi - lo < 1e-4:
            continue
        rows["key"].append(key)
        rows["time"].append(round(lo - window[0], 5))
        rows["duration"].append(round(hi - lo, 5))
        rows["phone"].append(name)
        rows["stress"].append(stress)
    return rows


def finish(u: Utterance, native: Path, segments: list[tuple[str, float, int]], seed: int,
           root: str, write_audio: bool) -> dict[str, list]:
    """Resample, trim and roughen one utterance; write its WAV; return its phone rows."""
    raw, native_rate = sf.read(native, dtype="float32", always_2d=True)
    wave = to_16k(raw.mean(axis=1), native_rate, u.tape)
    rng = common.entity_rng(seed, u.index, 1)
    segments = [(name, end / u.tape, stress) for name, end, stress in segments]
    window = trim_window(segments, wave.size / SAMPLE_RATE, rng)
    wave = wave[int(window[0] * SAMPLE_RATE): int(np.ceil(window[1] * SAMPLE_RATE))]
    if write_audio:
        wave = common.channel(wave, SAMPLE_RATE, rng)  # a different microphone per recording
        wave = common.room_reverb(wave, SAMPLE_RATE, rng, rt60_range=(0.1, 0.6))
        wave = common.level(common.add_noise(wave, rng), rng)
        fs.write_bytes(fs.join(root, audio_path(u)), common.encode_audio(wave, SAMPLE_RATE))
    return phone_rows(u.key, segments, window)


def audio_path(u: Utterance) -> str:
    return f"audio/{u.voice.name}/{u.key}.wav"


def render_chunk(chunk: list[Utterance], seed: int, root: str,
                 no_audio: frozenset[int]) -> dict[str, list]:
    """Run one festival process for `chunk` and finish every utterance (a worker's job)."""
    with tempfile.TemporaryDirectory(prefix="speech-") as folder:
        segments = run_festival(chunk, folder)
        rows: dict[str, list] = {}
        for u in chunk:
            one = finish(u, Path(folder) / f"{u.index}.wav", segments[u.index], seed, root,
                         u.index not in no_audio)
            for name, values in one.items():
                rows.setdefault(name, []).extend(values)
    return rows


# -- the builder ----------------------------------------------------------------------------

def chunks(utterances: list[Utterance]) -> list[list[Utterance]]:
    """Utterances grouped by voice (in voice order), CHUNK per festival process."""
    out = []
    for voice in VOICES:
        mine = [u for u in utterances if u.voice == voice]
        out += [mine[k: k + CHUNK] for k in range(0, len(mine), CHUNK)]
    return out


def render_all(parts: list[list[Utterance]], seed: int, root: str, no_audio: frozenset[int],
               workers: int) -> pd.DataFrame:
    """Render every chunk (in `workers` processes when > 1) and gather the phone rows in
    entity order, so the result does not depend on completion order."""
    total, done, start = sum(len(p) for p in parts), 0, time.perf_counter()
    results: list[dict[str, list] | None] = [None] * len(parts)

    def progress(k: int, rows: dict[str, list]) -> None:
        nonlocal done
        results[k], done = rows, done + len(parts[k])
        print(f"[corpus speech] {done}/{total} utterances rendered "
              f"({time.perf_counter() - start:.0f} s)", flush=True)

    if workers <= 1:
        for k, part in enumerate(parts):
            progress(k, render_chunk(part, seed, root, no_audio))
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded parent
        with cf.ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(render_chunk, part, seed, root, no_audio): k
                       for k, part in enumerate(parts)}
            for future in cf.as_completed(futures):
                progress(futures[future], future.result())
    frames = [pd.DataFrame(rows) for rows in results if rows]
    logs = pd.concat(frames, ignore_index=True)
    logs["key_order"] = logs["key"].str.slice(7).astype(int)
    logs = logs.sort_values(["key_order", "time"], kind="stable").drop(columns="key_order")
    return logs.astype({"time": "float64", "duration": "float64", "stress": "int64"})


def manifest_frame(utterances: list[Utterance], no_audio: np.ndarray) -> pd.DataFrame:
    """key, audio, and the labels (floats are continuous factors, strings categorical)."""
    return pd.DataFrame({
        "key": [u.key for u in utterances],
        "audio": [None if no_audio[u.index] else audio_path(u) for u in utterances],
        "label": [u.voice.name for u in utterances],
        "label_language": [u.voice.language for u in utterances],
        "label_gender": [u.voice.gender for u in utterances],
        "label_word": [CONCEPTS[u.concepts[0]] for u in utterances],
        "label_rate": np.array([u.rate for u in utterances], dtype=np.float64),
        "label_pitch": np.array([u.semitones for u in utterances], dtype=np.float64),
    })


def make_speech_corpus(out: str, *, entities: int = 600, seed: int = 0,
                       missing_fraction: float = 0.1, workers: int | None = None
                       ) -> common.CorpusSummary:
    """Build the speech archive into `out` (see the module docstring and
    docs/corpora-speech.md); installs festival and the voices first when missing."""
    started = time.perf_counter()
    ensure_debian_packages(required_packages(), corpus="speech")
    if entities < 2 * len(VOICES):
        raise ValueError(f"entities must be >= {2 * len(VOICES)} (two per voice), got {entities}")
    workers = max(1, workers if workers is not None else min(2, os.cpu_count() or 1))
    root = fs.normalize(out)
    utterances = plan(entities, seed)
    masks = common.missing_masks(entities, missing_fraction, seed, ["audio", "tabular"])
    logs = render_all(chunks(utterances), seed, root,
                      frozenset(np.flatnonzero(masks["audio"]).tolist()), workers)
    logs = logs[~logs["key"].isin({utterances[i].key for i in np.flatnonzero(masks["tabular"])})]
    manifest = manifest_frame(utterances, masks["audio"])
    attributes = pd.DataFrame({"key": manifest["key"], "speaker": manifest["label"],
                               "word": manifest["label_word"],
                               "language": manifest["label_language"],
                               "gender": manifest["label_gender"]})
    relevance = common.graded_relevance(attributes, RELEVANCE_WEIGHTS, seed=seed)
    common.write_tables(root, manifest, logs, relevance, seed)
    labels = [c for c in manifest.columns if c.startswith("label")]
    return common.CorpusSummary(
        name="speech", root=root, entities=entities,
        views={"audio": int((~masks["audio"]).sum()),
               "tabular": int(logs["key"].nunique())},
        labels={c: int(manifest[c].nunique()) for c in labels},
        log_rows=len(logs), relevance_rows=relevance.num_rows,
        seconds=time.perf_counter() - started,
        notes=[f"{len(VOICES)} voices: {', '.join(v.name for v in VOICES)}"])
