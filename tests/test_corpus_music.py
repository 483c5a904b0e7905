"""The music corpus, built for real (FluidSynth + the MuseScore SoundFont + music21 melodies).

One 96-entity build serves the schema, view and classifier tests; three 24-entity builds check
determinism (same seed with 1 and 2 workers, another seed). The only skip: the corpus cannot
be built on this machine (CorpusUnavailable).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from raysys.corpora import CorpusUnavailable
from raysys.corpora.music import (
    FAMILIES,
    INSTRUMENTS,
    MODES,
    PITCH_CLASSES,
    ROLL_COLUMNS,
    ROLL_LOW,
    ROLL_PITCHES,
    SAMPLE_RATE,
    SECONDS_RANGE,
    TEMPO_RANGE,
    load_melodies,
    make_music_corpus,
)
from raysys.data.archive import load_archive

ENTITIES = 96
MISSING = 0.1
TABLES = ("manifest.parquet", "logs.parquet", "relevance.parquet")
# Family accuracy of the MFCC baseline at 96 entities measured 0.71-0.74 over seeds 0-3
# (chance 0.125); the bar leaves a wide margin for other seeds and library versions.
MIN_FAMILY_ACCURACY = 0.45


def _build(root: Path, **kwargs) -> Path:
    try:
        make_music_corpus(str(root), **kwargs)
    except CorpusUnavailable as e:
        pytest.skip(f"music corpus unavailable: {e}")
    return root


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("music") / "archive"
    return _build(root, entities=ENTITIES, seed=0, missing_fraction=MISSING)


@pytest.fixture(scope="module")
def small_builds(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("music-small")
    return {
        "a": _build(base / "a", entities=24, seed=5, workers=1),
        "again": _build(base / "again", entities=24, seed=5, workers=2),
        "other": _build(base / "other", entities=24, seed=6, workers=1),
    }


def _manifest(root: Path) -> pd.DataFrame:
    return pd.read_parquet(root / "manifest.parquet")


def _audio(root: Path, relative: str) -> np.ndarray:
    wave, rate = sf.read(root / relative, dtype="float32")
    assert rate == SAMPLE_RATE and wave.ndim == 1
    return wave


# -- determinism ----------------------------------------------------------------------------

def test_same_seed_same_archive_whatever_the_workers(small_builds):
    a, again = small_builds["a"], small_builds["again"]
    for name in TABLES:
        assert (a / name).read_bytes() == (again / name).read_bytes(), name
    manifest = _manifest(a)
    for relative in manifest["audio"].dropna().head(6):
        assert np.array_equal(_audio(a, relative), _audio(again, relative)), relative
    for relative in manifest["image"].dropna().head(6):
        assert (a / relative).read_bytes() == (again / relative).read_bytes(), relative


def test_other_seed_other_archive(small_builds):
    a, other = _manifest(small_builds["a"]), _manifest(small_builds["other"])
    labels = ["label", "label_key", "label_tempo", "label_melody"]
    assert not a[labels].equals(other[labels])
    both = a["audio"].notna() & other["audio"].notna()
    first = a.index[both][0]
    wave_a = _audio(small_builds["a"], a["audio"][first])
    wave_b = _audio(small_builds["other"], other["audio"][first])
    assert wave_a.shape != wave_b.shape or not np.array_equal(wave_a, wave_b)


# -- schema, labels, views ------------------------------------------------------------------

def test_archive_loads_without_bad_records(corpus):
    info = load_archive(str(corpus))
    assert info.bad == []
    assert len(info.manifest) == ENTITIES
    assert info.logs is not None and info.relevance is not None
    assert {"pitch", "duration", "velocity", "interval"} <= set(info.logs.numeric_cols)
    assert info.logs.time_col == "time"


def test_labels_types_and_values(corpus):
    manifest = _manifest(corpus)
    assert list(manifest.columns) == ["key", "audio", "image", "label", "label_family",
                                      "label_key", "label_mode", "label_tempo", "label_melody"]
    # convention: float = continuous factor, strings = categorical
    assert manifest["label_tempo"].dtype == np.float64
    for column in ("label", "label_family", "label_key", "label_mode", "label_melody"):
        assert all(isinstance(v, str) for v in manifest[column]), column
    family_of = {i.name: i.family for i in INSTRUMENTS}
    assert set(manifest["label"]) <= set(family_of)
    assert (manifest["label_family"] == manifest["label"].map(family_of)).all()
    assert set(manifest["label_family"]) <= set(FAMILIES)
    assert set(manifest["label_key"]) <= set(PITCH_CLASSES)
    assert set(manifest["label_mode"]) <= set(MODES)
    assert manifest["label_tempo"].between(*TEMPO_RANGE).all()
    assert set(manifest["label_melody"]) <= {m.id for m in load_melodies()}
    assert manifest["label_family"].nunique() == len(FAMILIES)  # 96 draws cover all 8
    assert manifest["label_key"].nunique() >= 10


def test_missing_views_at_the_requested_rate(corpus):
    manifest = _manifest(corpus)
    logs = pd.read_parquet(corpus / "logs.parquet")
    missing = pd.DataFrame({
        "audio": manifest["audio"].isna(),
        "image": manifest["image"].isna(),
        "tabular": ~manifest["key"].isin(set(logs["key"])),
    })
    assert (missing.sum() == round(MISSING * ENTITIES)).all(), missing.sum()
    assert not missing.all(axis=1).any()


def test_relevance_ratings(corpus):
    keys = set(_manifest(corpus)["key"])
    relevance = pd.read_parquet(corpus / "relevance.parquet")
    assert relevance["relevance"].between(0, 100).all()
    assert set(relevance["query"]) == keys and set(relevance["candidate"]) <= keys
    assert (relevance["query"] != relevance["candidate"]).all()
    assert relevance["relevance"].max() >= 60 and relevance["relevance"].min() <= 20


def test_audio_files(corpus):
    manifest = _manifest(corpus).dropna(subset=["audio"])
    for relative in manifest["audio"]:
        wave = _audio(corpus, relative)
        seconds = wave.size / SAMPLE_RATE
        assert SECONDS_RANGE[0] - 0.01 <= seconds <= SECONDS_RANGE[1] + 0.01
        peak_db = 20 * np.log10(np.abs(wave).max())
        assert -31 <= peak_db <= -5.5  # common.level's range, give or take PCM rounding


def test_logs_and_piano_roll_show_the_same_notes(corpus):
    from PIL import Image

    manifest = _manifest(corpus)
    logs = pd.read_parquet(corpus / "logs.parquet").sort_values(["key", "time"])
    counts = logs.groupby("key").size()
    assert counts.between(4, 16).all()
    assert logs["pitch"].between(ROLL_LOW, ROLL_LOW + ROLL_PITCHES - 1).all()
    assert (logs["duration"] > 0).all() and (logs["time"] < SECONDS_RANGE[1]).all()
    both = manifest.dropna(subset=["image"])
    both = both[both["key"].isin(counts.index)].head(10)
    for key, relative in zip(both["key"], both["image"], strict=True):
        roll = np.asarray(Image.open(corpus / relative))
        assert roll.shape == (ROLL_PITCHES, ROLL_COLUMNS)
        lit_rows = set(np.flatnonzero(roll.max(axis=1) > 0))
        pitches = logs.loc[logs["key"] == key, "pitch"]
        assert lit_rows == {ROLL_PITCHES - 1 - (p - ROLL_LOW) for p in pitches}


# -- the labels are in the audio ------------------------------------------------------------

def _mfcc_features(root: Path, files: list[str]) -> np.ndarray:
    """Mean and standard deviation over time of 20 MFCCs per clip: a timbre summary."""
    import torch
    import torchaudio

    mfcc = torchaudio.transforms.MFCC(
        sample_rate=SAMPLE_RATE, n_mfcc=20,
        melkwargs={"n_fft": 512, "hop_length": 160, "n_mels": 40})
    rows = []
    with torch.no_grad():
        for relative in files:
            coefficients = mfcc(torch.from_numpy(_audio(root, relative)))
            rows.append(torch.cat([coefficients.mean(1), coefficients.std(1)]).numpy())
    return np.stack(rows)


def test_instrument_family_is_audible(corpus):
    """A linear classifier on MFCC statistics tells the instrument family far above chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    manifest = _manifest(corpus).dropna(subset=["audio"])
    features = _mfcc_features(corpus, manifest["audio"].tolist())
    families = manifest["label_family"].to_numpy()
    folds = min(5, int(pd.Series(families).value_counts().min()))
    assert folds >= 3
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))
    accuracy = cross_val_score(model, features, families,
                               cv=StratifiedKFold(folds, shuffle=True, random_state=0)).mean()
    assert accuracy >= MIN_FAMILY_ACCURACY, f"family accuracy {accuracy:.2f}"
