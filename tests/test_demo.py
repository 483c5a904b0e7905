"""The demo archive: deterministic, and its views really carry the hidden factors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from raysys.data.archive import load_archive
from raysys.data.decode import load_audio, load_image
from raysys.data.demo import COLOURS, TEMPOS_BPM, make_demo_archive, similarity

ENTITIES = 40


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("demo"))
    summary = make_demo_archive(root, entities=ENTITIES, seed=11, missing_fraction=0.2)
    return root, summary, load_archive(root)


def dominant_frequency(wave: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    freqs = np.fft.rfftfreq(len(wave), 1 / rate)
    spectrum[freqs < 100] = 0
    return float(freqs[np.argmax(spectrum)])


def tempo_from_onsets(wave: np.ndarray, rate: int) -> float:
    """BPM from the autocorrelation of the positive energy flux (5 ms frames)."""
    hop = rate // 200
    frames = len(wave) // hop
    energy = np.sqrt((wave[: frames * hop].reshape(frames, hop) ** 2).mean(axis=1))
    flux = np.maximum(np.diff(energy), 0)
    flux -= flux.mean()
    ac = np.correlate(flux, flux, "full")[len(flux) - 1 :]
    lags = np.arange(len(ac)) * hop / rate
    window = (lags >= 60 / 160) & (lags <= 60 / 70)
    return 60 / float(lags[window][np.argmax(ac[window])])


def test_same_seed_gives_identical_archives(demo, tmp_path):
    root, _, info = demo
    again = str(tmp_path / "again")
    make_demo_archive(again, entities=ENTITIES, seed=11, missing_fraction=0.2)
    for name in ("manifest.parquet", "logs.parquet", "relevance.parquet"):
        with open(os.path.join(root, name), "rb") as a, open(os.path.join(again, name), "rb") as b:
            assert a.read() == b.read(), name
    other = load_archive(again).manifest
    for i, uri in enumerate(info.manifest.views["audio"]):
        if uri is not None:
            first, _ = load_audio(uri, sample_rate=16000)
            second, _ = load_audio(other.views["audio"][i], sample_rate=16000)
            np.testing.assert_array_equal(first, second)
    for i, uri in enumerate(info.manifest.views["image"]):
        if uri is not None:
            np.testing.assert_array_equal(load_image(uri), load_image(other.views["image"][i]))


def test_other_seed_gives_another_archive(demo, tmp_path):
    root, _, _ = demo
    make_demo_archive(str(tmp_path), entities=ENTITIES, seed=12, missing_fraction=0.2)
    with open(os.path.join(root, "manifest.parquet"), "rb") as a:
        assert a.read() != (tmp_path / "manifest.parquet").read_bytes()


def test_audio_carries_pitch_and_tempo(demo):
    _, _, info = demo
    labels = info.manifest.labels
    checked = 0
    for i, uri in enumerate(info.manifest.views["audio"]):
        if uri is None:
            continue
        wave, _ = load_audio(uri, sample_rate=16000)
        f0 = dominant_frequency(wave, 16000)
        assert round(12 * np.log2(f0 / 220.0)) % 12 == labels["label_pitch"][i]
        bpm, true_bpm = tempo_from_onsets(wave, 16000), labels["label_tempo"][i]
        assert abs(bpm - true_bpm) / true_bpm < 0.04  # the Acc1 tolerance
        checked += 1
    assert checked == ENTITIES - round(0.2 * ENTITIES)


def test_formats_and_rates_vary(demo):
    _, _, info = demo
    infos = [load_audio(u, sample_rate=16000)[1] for u in info.manifest.views["audio"] if u]
    assert {i.format for i in infos} == {"WAV", "FLAC"}
    assert {i.source_rate for i in infos} == {16000, 22050}
    assert all(2.0 <= i.duration_s <= 4.0 for i in infos)


def test_missing_fraction_is_exact_and_no_entity_is_empty(demo):
    _, summary, info = demo
    missing = round(0.2 * ENTITIES)
    audio = np.array([u is None for u in info.manifest.views["audio"]])
    image = np.array([u is None for u in info.manifest.views["image"]])
    no_logs = np.array([k not in info.logs.spans for k in info.manifest.keys])
    assert audio.sum() == image.sum() == no_logs.sum() == missing
    assert not (audio & image & no_logs).any()
    assert summary.audio_files == summary.image_files == ENTITIES - missing


def test_image_shows_the_class_colour(demo):
    _, _, info = demo
    labels = info.manifest.labels["label"]
    for i, uri in enumerate(info.manifest.views["image"]):
        if uri is None:
            continue
        pixels = load_image(uri).astype(float)
        h, w, _ = pixels.shape
        assert 64 <= h <= 96 and 64 <= w <= 96
        centre = pixels[h // 2 - 1 : h // 2 + 2, w // 2 - 1 : w // 2 + 2].mean(axis=(0, 1))
        assert np.abs(centre - COLOURS[labels[i]]).max() < 20


def test_logs_follow_the_hidden_state(demo):
    _, _, info = demo
    logs, labels = info.logs, info.manifest.labels
    assert logs.problems == [] and logs.categorical_cols == ["state"]
    for i, key in enumerate(info.manifest.keys):
        if key not in logs.spans:
            continue
        rows = logs.frame.iloc[slice(*logs.spans[key])]
        assert 6 <= len(rows) <= 20 and rows["time"].is_monotonic_increasing
        assert abs(rows["rate"].mean() - labels["label_tempo"][i] / 60) < 0.1


def test_relevance_follows_shared_factors(demo):
    _, _, info = demo
    frame, labels = info.relevance.frame, info.manifest.labels
    assert (frame.groupby("query").size() == 16).all()
    assert (frame["query"] != frame["candidate"]).all()
    assert frame["relevance"].between(0, 100).all()
    index = {k: i for i, k in enumerate(info.manifest.keys)}

    class Row:  # the labels of one entity, shaped like demo.Entity for `similarity`
        def __init__(self, i: int) -> None:
            self.fine, self.coarse = labels["label"][i], labels["label_coarse"][i]
            self.pitch = labels["label_pitch"][i]
            self.tempo_index = TEMPOS_BPM.index(labels["label_tempo"][i])

    expected = np.array([100 * similarity(Row(index[q]), Row(index[c]))
                         for q, c in zip(frame["query"], frame["candidate"], strict=True)])
    residual = frame["relevance"].to_numpy() - expected
    assert abs(residual.mean()) < 1.0 and residual.std() < 5.0  # rating noise sigma = 4
