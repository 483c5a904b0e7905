"""ViewBuilder rows: the batch contract, determinism, and records that match the views."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from raysys.data.augment import AUG_PARAMS, crop
from raysys.data.batch import HeteroBatch, aug_column
from raysys.data.config import DataConfig
from raysys.data.features import AudioFeaturizer, TabularStats, image_to_tensor, tabular_window
from raysys.data.views import ViewBuilder, ViewError, row_schema, stack_rows

SR = 16000


def logs(n: int = 40, seed: int = 0) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    return pd.DataFrame({"key": "k", "time": g.permutation(n).astype(float),
                         "x": g.normal(size=n), "y": g.normal(3, 2, n),
                         "kind": g.choice(["a", "b", "c"], n)})


STATS = TabularStats.from_frame(logs(200, seed=1))
G = np.random.default_rng(42)
WAVE = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(1.7 * SR)) / SR)
        + 0.05 * G.normal(size=int(1.7 * SR))).astype(np.float32)
IMAGE = G.integers(0, 256, (48, 80, 3), dtype=np.uint8)


def builder(**data) -> ViewBuilder:
    return ViewBuilder(DataConfig(image_size=32, **data), STATS)


def build(vb: ViewBuilder, entity: int = 7, epoch: int = 0, **sources) -> dict:
    sources = {"waveform": WAVE, "image": IMAGE, "log_rows": logs(), **sources}
    return vb.build(f"k{entity}", entity, **sources, epoch=epoch)


def no_aug(**overrides) -> dict:
    """Augment section with every augmentation off except `overrides` (p values)."""
    audio = {k: 0.0 for k in ("gain_p", "noise_p", "pitch_shift_p", "time_stretch_p",
                              "time_mask_p", "freq_mask_p", "crop_p", "eq_p", "band_p",
                              "reverb_p")}
    image = {"crop_p": 0.0, "flip_p": 0.0, "color_p": 0.0}
    tabular = {"corrupt_p": 0.0, "window_p": 0.0}
    for key, value in overrides.items():
        section, name = key.split("__")
        {"audio": audio, "image": image, "tabular": tabular}[section][name] = value
    return {"audio": audio, "image": image, "tabular": tabular}


def assert_matches_schema(row: dict, schema: dict) -> None:
    assert set(row) == set(schema)
    for col, (dtype, shape) in schema.items():
        value = np.asarray(row[col])
        assert value.shape == shape, col
        if col != "key":
            assert value.dtype == dtype, col


@pytest.mark.parametrize(
    "data",
    [{}, {"modalities": ["audio"], "views_per_modality": 3},
     {"modalities": ["tabular", "image"], "views_per_modality": 1, "tabular_window": 5},
     {"audio": {"channels": ["pcen"], "n_bins": 16}, "clip_seconds": 0.5}],
)
def test_row_matches_schema_and_batch_contract(data):
    vb = builder(**data)
    row = build(vb)
    assert_matches_schema(row, vb.schema)
    cfg = vb.cfg
    v = cfg.views_per_modality
    if "audio" in cfg.modalities:
        hop = cfg.audio.hop_length
        t = 1 + round(cfg.clip_seconds * SR) // hop
        assert row["audio"].shape == (v, len(cfg.audio.channels), cfg.audio.n_bins, t)
    if "image" in cfg.modalities:
        assert row["image"].shape == (v, 3, 32, 32)
    if "tabular" in cfg.modalities:
        assert row["tabular_num"].shape == (v, cfg.tabular_window, 2)
        assert row["tabular_cat"].shape == (v, cfg.tabular_window, 1)
    for modality in cfg.modalities:
        assert row[f"{modality}_present"]
        for name, params in AUG_PARAMS[modality].items():
            assert row[aug_column(modality, name, "applied")].shape == (v,)
            for p in params:
                assert row[aug_column(modality, name, p)].dtype == np.float32
    batch = HeteroBatch.from_numpy(stack_rows([row, vb.empty_row("e", 1)]))
    assert batch.size == 2 and set(batch.views) == set(cfg.modalities)
    assert batch.views[cfg.modalities[0]].present.tolist() == [True, False]


def test_missing_modality_is_zero_absent_and_unaugmented():
    vb = builder()
    row = build(vb, waveform=None, log_rows=logs(0))
    assert_matches_schema(row, vb.schema)
    assert not row["audio_present"] and not row["audio"].any()
    assert not row["tabular_present"] and not row["tabular_row_mask"].any()
    assert row["image_present"]
    for modality in ("audio", "tabular"):
        for name, params in AUG_PARAMS[modality].items():
            assert not row[aug_column(modality, name, "applied")].any()
            assert not any(row[aug_column(modality, name, p)].any() for p in params)


def rows_equal(a: dict, b: dict) -> bool:
    return all(np.array_equal(np.asarray(a[c]), np.asarray(b[c])) for c in a)


def test_deterministic_for_seed_entity_epoch_independent_of_order():
    first = builder()
    a = [build(first, entity=e, epoch=3) for e in (1, 2, 3)]
    second = builder()  # fresh worker, other order
    b = [build(second, entity=e, epoch=3) for e in (3, 1, 2)]
    assert rows_equal(a[0], b[1]) and rows_equal(a[1], b[2]) and rows_equal(a[2], b[0])


def aug_columns(row: dict) -> np.ndarray:
    return np.concatenate([np.asarray(row[c], dtype=np.float64) for c in sorted(row)
                           if c.startswith("aug.")])


@pytest.mark.parametrize("change", ["epoch", "entity", "seed"])
def test_different_epoch_entity_or_seed_changes_augmentations(change):
    base = build(builder(), entity=7, epoch=0)
    other = {
        "epoch": lambda: build(builder(), entity=7, epoch=1),
        "entity": lambda: build(builder(), entity=8, epoch=0),
        "seed": lambda: build(builder(seed=1), entity=7, epoch=0),
    }[change]()
    assert not np.array_equal(aug_columns(base), aug_columns(other))
    assert not np.array_equal(base["image"], other["image"])


def test_views_are_sampled_independently_with_a_crop_each_unless_shared_whole_or_by_group():
    row = build(builder(views_per_modality=4))
    assert not np.array_equal(row["image"][0], row["image"][1])
    assert not np.array_equal(row["audio"][0], row["audio"][1])
    assert len(set(row["aug.audio.crop.start"].tolist())) > 1  # default: one crop per view
    shared = build(builder(views_per_modality=4, augment={"audio": {"crop_shared": True}}))
    starts = shared["aug.audio.crop.start"]
    assert shared["aug.audio.crop.applied"].all() and np.all(starts == starts[0])
    pairs = build(builder(views_per_modality=4, augment={"audio": {"crop_shared": 2}}))
    starts = pairs["aug.audio.crop.start"]
    assert starts[0] == starts[1] and starts[2] == starts[3] and starts[0] != starts[2]
    assert starts[0] == shared["aug.audio.crop.start"][0]  # the first crop as with `true`


def test_disabled_augmentation_is_the_evaluation_preprocessing():
    vb = builder(augment={"enabled": False})
    row = build(vb)
    for col in row:
        if col.startswith("aug."):
            assert not np.asarray(row[col]).any(), col
    for col in ("audio", "image", "tabular_num", "tabular_cat"):
        assert np.array_equal(row[col][0], row[col][1]), col
    np.testing.assert_array_equal(row["image"][0], image_to_tensor(IMAGE, 32).numpy())
    centre, _ = crop(torch.from_numpy(WAVE), SR, None)
    np.testing.assert_array_equal(row["audio"][0], AudioFeaturizer(vb.cfg)(centre).numpy())
    offset = (40 - 16) // 2
    num, num_mask, cat, row_mask = tabular_window(logs(), STATS, 16, offset)
    np.testing.assert_array_equal(row["tabular_num"][0], num)
    np.testing.assert_array_equal(row["tabular_cat"][1], cat)


def test_flip_record_true_means_mirrored_view():
    vb = builder(views_per_modality=8, augment=no_aug(image__flip_p=0.5))
    row = build(vb)
    plain = image_to_tensor(IMAGE, 32).numpy()
    flipped = row["aug.image.flip.applied"]
    assert 0 < flipped.sum() < 8
    for v in range(8):
        expected = plain[:, :, ::-1] if flipped[v] else plain
        np.testing.assert_array_equal(row["image"][v], expected)


def test_gain_record_matches_logmel_shift():
    """Gain g dB scales power by 10^(g/10): log-mel rises by g ln(10) / 10 where energy is high."""
    audio = {"channels": ["logmel"], "log_eps": 1e-12, "standardize": "none"}  # raw log-mel
    eval_row = build(ViewBuilder(DataConfig(audio=audio, modalities=["audio"],
                                            augment={"enabled": False}), None))
    vb = ViewBuilder(DataConfig(audio=audio, modalities=["audio"], views_per_modality=3,
                                augment=no_aug(audio__gain_p=1.0)), None)
    row = build(vb)
    loud = eval_row["audio"][0] > eval_row["audio"][0].max() - 10
    assert loud.sum() > 50
    for v in range(3):
        shift = row["audio"][v] - eval_row["audio"][0]
        expected = row["aug.audio.gain.db"][v] * math.log(10) / 10
        np.testing.assert_allclose(shift[loud], expected, atol=1e-3)


def test_time_mask_record_matches_zeroed_frames():
    vb = builder(views_per_modality=6, augment=no_aug(audio__time_mask_p=0.5))
    row = build(vb)
    t = row["audio"].shape[-1]
    applied = row["aug.audio.time_mask.applied"]
    assert 0 < applied.sum() < 6
    for v in range(6):
        zero_frames = np.flatnonzero((row["audio"][v] == 0).all(axis=(0, 1)))
        if applied[v]:
            start = round(row["aug.audio.time_mask.start"][v] * t)
            width = round(row["aug.audio.time_mask.width"][v] * t)
            np.testing.assert_array_equal(zero_frames, np.arange(start, start + width))
        else:
            assert zero_frames.size == 0


def test_room_and_band_augmentations_are_recorded_and_off_by_default():
    """reverb_p / band_p = 1: every view records its room and band (within the configured
    ranges); at their default 0 nothing is recorded and the other draws are unchanged."""
    on = builder(views_per_modality=3, augment=no_aug(audio__reverb_p=1.0, audio__band_p=1.0))
    row = build(on)
    assert row["aug.audio.reverb.applied"].all() and row["aug.audio.band.applied"].all()
    assert ((row["aug.audio.reverb.rt60"] >= 0.1) & (row["aug.audio.reverb.rt60"] <= 0.8)).all()
    assert ((row["aug.audio.band.lowpass_hz"] >= 3000)
            & (row["aug.audio.band.lowpass_hz"] <= 7500)).all()
    assert len(set(row["aug.audio.reverb.rt60"].tolist())) == 3  # each view its own room
    default = build(builder(views_per_modality=3))
    assert not default["aug.audio.reverb.applied"].any()
    assert not default["aug.audio.band.applied"].any()
    with pytest.raises(ValueError, match="low-pass corner must stay below sample_rate/2"):
        DataConfig(sample_rate=8000, augment={"audio": {"band_p": 0.5}})


def test_tabular_window_record_gives_the_offset():
    vb = builder(views_per_modality=4, augment=no_aug(tabular__window_p=1.0))
    row = build(vb)
    for v in range(4):
        offset = round(row["aug.tabular.window.start"][v] * 40)
        num, mask, cat, row_mask = tabular_window(logs(), STATS, 16, offset)
        np.testing.assert_array_equal(row["tabular_num"][v], num)
        np.testing.assert_array_equal(row["tabular_num_mask"][v], mask)
        np.testing.assert_array_equal(row["tabular_row_mask"][v], row_mask)


def test_short_logs_are_padded_and_masked():
    row = build(builder(), log_rows=logs(5))
    assert row["tabular_row_mask"].sum(axis=1).tolist() == [5, 5]
    assert not row["tabular_num"][:, 5:].any() and not row["tabular_cat"][:, 5:].any()


def test_empty_row_and_schema():
    vb = builder()
    row = vb.empty_row("gone", 5)
    assert_matches_schema(row, row_schema(vb.cfg, STATS))
    assert row["key"] == "gone" and row["entity_id"] == 5
    assert not any(np.asarray(row[c]).any() for c in row if c not in ("key", "entity_id"))


@pytest.mark.parametrize(
    ("sources", "modality"),
    [({"waveform": np.zeros((2, 100), np.float32)}, "audio"),
     ({"waveform": np.full(100, np.nan, np.float32)}, "audio"),
     ({"image": np.zeros((4, 4), np.uint8)}, "image"),
     ({"log_rows": [1, 2]}, "tabular")],
)
def test_bad_sources_raise_view_error_naming_the_modality(sources, modality):
    with pytest.raises(ViewError, match=modality) as info:
        build(builder(), **sources)
    assert info.value.modality == modality


def test_tabular_needs_stats():
    with pytest.raises(ValueError, match="TabularStats"):
        ViewBuilder(DataConfig(), None)
