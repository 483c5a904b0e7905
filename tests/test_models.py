"""Encoders and heads: shapes, masking of missing views, backbone exposure, LOEV++ branches."""

from __future__ import annotations

import pytest
import torch

from raysys.config import ConfigError, load_config
from raysys.data.batch import HeteroBatch, ModalityViews
from raysys.models import ModelConfig, ModelInputs, MultiViewModel
from raysys.models.config import TabularEncoderConfig

B, V, C, F, T, HW, W, FN, CARDS = 4, 2, 3, 16, 12, 16, 5, 3, (4, 6)


def make_batch(seed: int = 0, b: int = B) -> HeteroBatch:
    g = torch.Generator().manual_seed(seed)
    row_mask = torch.rand(b, V, W, generator=g) > 0.3
    tab = {
        "tabular_num": torch.randn(b, V, W, FN, generator=g),
        "tabular_num_mask": torch.rand(b, V, W, FN, generator=g) > 0.2,
        "tabular_cat": torch.stack(
            [torch.randint(0, c + 1, (b, V, W), generator=g) for c in CARDS], dim=-1
        ),
        "tabular_row_mask": row_mask,
    }
    pitch = {"applied": torch.rand(b, V, generator=g) > 0.5, "semitones": torch.randn(b, V)}
    every = torch.ones(b, dtype=torch.bool)
    views = {
        "audio": ModalityViews(torch.randn(b, V, C, F, T, generator=g), every.clone(),
                               aug={"pitch_shift": pitch}),
        "image": ModalityViews(torch.randn(b, V, 3, HW, HW, generator=g), every.clone()),
        "tabular": ModalityViews(tab, every.clone()),
    }  # fmt: skip
    return HeteroBatch([f"k{i}" for i in range(b)], torch.arange(b) * 7 + 1, views)


def make_model(**overrides) -> MultiViewModel:
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=8, proj_hidden=16, **overrides)
    inputs = ModelInputs(("audio", "image", "tabular"), C, FN, CARDS, W)
    return MultiViewModel(cfg, inputs)


def test_shapes_per_modality_and_slots() -> None:
    model = make_model(loev_heads=["pitch_shift"], cola=True)
    out = model(make_batch())
    assert set(out.embeddings) == {"invariant", "pitch_shift", "cola"}
    for emb in out.embeddings.values():
        assert emb.shape == (B, 3 * V, 8) and torch.isfinite(emb).all()
    assert out.slot_names() == ["audio0", "audio1", "image0", "image1", "tabular0", "tabular1"]
    assert out.slot_modality.tolist() == [0, 0, 1, 1, 2, 2]
    assert out.present.all()
    dims = {"audio": 64, "image": 64, "tabular": 64}
    for m, d in dims.items():
        assert out.backbone[m].shape == (B, V, d)
    # pitch_shift is recorded on audio only: other modalities' slots count as "not applied"
    applied = out.applied["pitch_shift"]
    recorded = make_batch().views["audio"].aug["pitch_shift"]["applied"]
    assert torch.equal(applied[:, :V], recorded)
    assert not applied[:, V:].any()


def test_missing_views_are_zero_and_do_not_leak() -> None:
    model = make_model()
    batch = make_batch()
    ref = model(batch).embeddings["invariant"]
    absent = torch.tensor([False, True, False, True])
    for m in ("audio", "image"):
        batch.views[m].present = ~absent
        batch.views[m].x[absent] = float("nan")  # garbage in absent rows must not leak
    batch.views["tabular"].x["tabular_num"][absent] = float("nan")
    batch.views["tabular"].present = ~absent
    out = model(batch)
    emb = out.embeddings["invariant"]
    assert (emb[absent] == 0).all() and torch.isfinite(emb).all()
    assert not out.present[absent].any() and out.present[~absent].all()
    # GroupNorm only: present rows are unchanged by what the absent rows hold
    torch.testing.assert_close(emb[~absent], ref[~absent])
    emb.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), name


def test_modality_absent_from_batch_and_nan_in_present_view_propagates() -> None:
    model = make_model()
    batch = make_batch()
    del batch.views["image"]
    out = model(batch)
    assert not out.present[:, V : 2 * V].any()
    assert (out.embeddings["invariant"][:, V : 2 * V] == 0).all()
    batch.views["audio"].x[0, 0, 0, 0, 0] = float("nan")
    emb = model(batch).embeddings["invariant"]
    assert torch.isnan(emb[0, 0]).any()  # a NaN in a present view is not hidden


def test_backbone_is_the_encoder_output_before_the_head() -> None:
    model = make_model()
    batch = make_batch()
    out = model(batch)
    audio = batch.views["audio"].x.reshape(B * V, C, F, T)
    feats = model.encoders["audio"](audio)
    torch.testing.assert_close(out.backbone["audio"], feats.reshape(B, V, -1))
    proj = model.heads.project("invariant", "audio", feats).reshape(B, V, -1)
    torch.testing.assert_close(out.embeddings["invariant"][:, :V], proj)


def test_embed_matches_forward_and_is_normalised() -> None:
    model = make_model()
    batch = make_batch()
    out = model(batch)
    e = model.embed("image", batch.views["image"])
    assert e.shape == (B, V, 8)
    torch.testing.assert_close(e.norm(dim=-1), torch.ones(B, V))
    expected = torch.nn.functional.normalize(out.embeddings["invariant"][:, V : 2 * V], dim=-1)
    torch.testing.assert_close(e, expected)
    with pytest.raises(ValueError, match="unknown head"):
        model.embed("image", batch.views["image"], head="nope")


def test_loev_plus_plus_branches_are_independent() -> None:
    model = make_model(loev_heads=["pitch_shift", "time_stretch"], loev_plus_plus=True)
    base = model.encoders["audio"].last
    b1, b2 = model.branches["pitch_shift"]["audio"], model.branches["time_stretch"]["audio"]
    ptrs = lambda mod: {p.data_ptr() for p in mod.parameters()}
    assert ptrs(base).isdisjoint(ptrs(b1)) and ptrs(b1).isdisjoint(ptrs(b2))
    first = lambda mod: next(p for p in mod.parameters() if p.dim() > 1)
    assert not torch.equal(first(b1), first(b2)) and not torch.equal(first(base), first(b1))
    out = model(make_batch())
    out.embeddings["pitch_shift"][:, :V].sum().backward()
    assert all(p.grad is None for p in b2.parameters())
    assert all(p.grad is None for p in base.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in b1.parameters())
    # image has no branch: its pitch_shift head reads the shared backbone
    assert "image" not in model.branches["pitch_shift"]


def test_default_sizes_are_small_and_resnet18_is_available() -> None:
    inputs = ModelInputs(("audio", "image", "tabular"), 3, 10, (20, 30), 16)
    model = MultiViewModel(ModelConfig(), inputs)
    n = sum(p.numel() for p in model.parameters())
    assert 50_000 < n < 1_000_000, n
    big = MultiViewModel(ModelConfig.model_validate({"image": {"kind": "resnet18"}}),
                         ModelInputs(("image",)))  # fmt: skip
    n18 = sum(p.numel() for p in big.encoders["image"].parameters())
    assert 11_000_000 < n18 < 11_300_000 and big.encoders["image"].out_dim == 512


def test_tabular_transformer_empty_window_and_bad_ids() -> None:
    cfg = {"tabular": TabularEncoderConfig(kind="transformer", hidden=16, heads=2, layers=2)}
    model = make_model(**cfg)
    batch = make_batch()
    batch.views["tabular"].x["tabular_row_mask"][0] = False  # present, but no real row
    out = model(batch)
    assert torch.isfinite(out.embeddings["invariant"]).all()
    assert (out.backbone["tabular"][0] == 0).all()
    batch.views["tabular"].x["tabular_cat"][1, 0, 0, 1] = CARDS[1] + 1
    with pytest.raises(ValueError, match=r"tabular_cat column 1: ids must lie in \[0, 6\]"):
        model(batch)


def test_bad_inputs_and_config_errors_are_named() -> None:
    model = make_model()
    batch = make_batch()
    batch.views["audio"].x = batch.views["audio"].x[:, :, :2]
    with pytest.raises(ValueError, match="audio encoder: expected"):
        model(batch)
    with pytest.raises(ConfigError, match="model.image.kind"):
        load_config(overrides=["model.image.kind=vit"])
    with pytest.raises(ConfigError, match="model.loev_heads"):
        load_config(overrides=["model.loev_heads=[invariant]"])
    with pytest.raises(ConfigError, match="model.audio.widht: unknown key"):
        load_config(overrides=["model.audio.widht=[4]"])
