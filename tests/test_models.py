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
    inputs = ModelInputs(("audio", "image", "tabular"), C, FN, CARDS, W, audio_bins=F)
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


def test_inspected_layers_are_each_trunk_layer_pooled_and_zero_where_absent() -> None:
    """Evaluation's clustering by depth: every trunk layer with parameters (norms are not
    layers), its output averaged over everything after the channels."""
    model = make_model()
    batch = make_batch()
    batch.views["audio"].present[1] = False
    got = {m: model.inspect_modality(m, batch.views[m])[2] for m in ("audio", "image", "tabular")}
    assert {m: list(g) for m, g in got.items()} == {
        "audio": ["layer1", "layer2"], "image": ["layer1", "layer2", "layer3", "layer4"],
        "tabular": ["layer1"]}
    assert [t.shape[-1] for t in got["audio"].values()] == [16, 32]
    encoder = model.encoders["audio"]
    x = batch.views["audio"].x[0]
    first = encoder.trunk[0](x)
    torch.testing.assert_close(got["audio"]["layer1"][0], first.mean(dim=(2, 3)))
    torch.testing.assert_close(got["audio"]["layer2"][0], encoder.trunk[1](first).mean(dim=(2, 3)))
    assert (got["audio"]["layer2"][1] == 0).all() and got["audio"]["layer2"][2].abs().sum() > 0


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


@pytest.mark.parametrize("audio", [{}, {"kind": "tdnn", "widths": [12, 10, 6], "aggregate": "all"}])
def test_loev_plus_plus_branches_are_independent(audio: dict) -> None:
    model = make_model(loev_heads=["pitch_shift", "time_stretch"], loev_plus_plus=True,
                       audio=audio)
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


def test_inspection_adds_each_loev_branch_before_its_projection_from_one_pass() -> None:
    """Evaluation probes a LOEV++ head's branch as it probes the backbone of the invariant
    head: the branch's last stage on the shared trunk, zeros where a view is absent; the
    backbone and heads are encode_modality's."""
    from raysys.embed.spaces import encode_views

    model = make_model(loev_heads=["pitch_shift", "time_stretch"], loev_plus_plus=True)
    batch = make_batch()
    batch.views["audio"].present[1] = False
    backbone, heads, got = model.inspect_modality("audio", batch.views["audio"])
    assert list(got) == ["pitch_shift_branch", "time_stretch_branch", "layer1", "layer2"]
    assert model.branch_heads("audio") == ["pitch_shift", "time_stretch"]
    plain_backbone, plain_heads = model.encode_modality("audio", batch.views["audio"])
    torch.testing.assert_close(backbone, plain_backbone)
    torch.testing.assert_close(heads, plain_heads)
    x = batch.views["audio"].x.reshape(B * V, C, F, T)
    trunk = model.encoders["audio"].trunk(x)
    branch = model.branches["pitch_shift"]["audio"](trunk).reshape(B, V, -1)
    torch.testing.assert_close(got["pitch_shift_branch"][0], branch[0])
    assert (got["pitch_shift_branch"][1] == 0).all()
    head = model.heads.project("pitch_shift", "audio", branch.reshape(B * V, -1))
    out = model(batch)
    torch.testing.assert_close(out.embeddings["pitch_shift"][0, :V], head.reshape(B, V, -1)[0])
    image = model.inspect_modality("image", batch.views["image"])[2]  # image has no branch
    assert model.branch_heads("image") == [] and not any("branch" in k for k in image)
    assert list(make_model().inspect_modality("audio", batch.views["audio"])[2]) == [
        "layer1", "layer2"]
    views = encode_views(model, "audio", batch.views["audio"].x[:, :1], layers=True)
    assert {"pitch_shift_branch", "time_stretch_branch", "layer1"} <= set(views)
    assert "pitch_shift_branch" not in encode_views(model, "audio", batch.views["audio"].x[:, :1])


def test_default_sizes_are_small_and_resnet18_is_available() -> None:
    inputs = ModelInputs(("audio", "image", "tabular"), 3, 10, (20, 30), 16)
    model = MultiViewModel(ModelConfig(), inputs)
    n = sum(p.numel() for p in model.parameters())
    assert 50_000 < n < 1_000_000, n
    big = MultiViewModel(ModelConfig.model_validate({"image": {"kind": "resnet18",
                                                               "pool": "global"}}),
                         ModelInputs(("image",)))  # fmt: skip
    n18 = sum(p.numel() for p in big.encoders["image"].parameters())
    assert 11_000_000 < n18 < 11_300_000 and big.encoders["image"].out_dim == 512
    # the grid pool adds one Linear (512 * 9 -> 512)
    grid = MultiViewModel(ModelConfig.model_validate({"image": {"kind": "resnet18"}}),
                          ModelInputs(("image",)))  # fmt: skip
    extra = sum(p.numel() for p in grid.encoders["image"].parameters()) - n18
    assert extra == 512 * 9 * 512 + 512


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


def test_centre_is_the_running_mean_and_forward_stays_row_independent() -> None:
    model = make_model(loev_heads=["pitch_shift"])
    batch = make_batch()
    batch.views["image"].present[1] = False  # absent rows must not shape the mean
    raw = model(batch)  # the centre starts at zero: these are the uncentred outputs
    model.update_centre(raw)
    centre = model.heads.centre
    assert centre.seen.all()
    for h, name in enumerate(model.head_names):
        for m in range(3):
            rows = raw.present & (raw.slot_modality == m).unsqueeze(0)
            torch.testing.assert_close(centre.mean[h, m], raw.embeddings[name][rows].mean(0))
    out = model(batch)  # centred: zero mean per (head, modality) over the present rows
    for name in model.head_names:
        for m in range(3):
            rows = out.present & (out.slot_modality == m).unsqueeze(0)
            mean = out.embeddings[name][rows].mean(0)
            torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-5)
    # forward reads the buffer, never the batch: a row alone embeds as it does among others
    single = HeteroBatch(batch.keys[:1], batch.entity_id[:1],
                         {m: ModalityViews(
                             {k: t[:1] for k, t in v.x.items()} if isinstance(v.x, dict)
                             else v.x[:1], v.present[:1],
                             {a: {p: t[:1] for p, t in ps.items()} for a, ps in v.aug.items()})
                          for m, v in batch.views.items()})  # fmt: skip
    torch.testing.assert_close(model(single).embeddings["invariant"][0],
                               out.embeddings["invariant"][0])
    # the next update moves the mean by (1 - momentum) of the gap to the new batch mean
    before = centre.mean.clone()
    model.update_centre(out)  # out's batch mean (uncentred) equals `before`: no change
    torch.testing.assert_close(centre.mean, before)
    off = make_model(centre_momentum=None)
    assert off.heads.centre is None
    off.update_centre(off(batch))  # a no-op


def _mean_pairwise_cosine(x: torch.Tensor) -> float:
    x = torch.nn.functional.normalize(x, dim=-1)
    n = len(x)
    return float(((x @ x.T).sum() - n) / (n * (n - 1)))


def _demo_spread(archive: str, overrides: list[str], steps: int) -> dict[str, float]:
    """configs/demo.yaml objective (binary + ListNet + LOEV, queue + momentum encoder) trained
    single-process for `steps` steps; mean pairwise cosine of each modality's held-out
    invariant embeddings (1.0 = every entity embedded alike)."""
    from pathlib import Path

    from raysys.data.pipeline import open_archive
    from raysys.data.rows import RowBuilder
    from raysys.objectives.multiview import Negatives
    from raysys.objectives.negatives.queue import EmbeddingQueue, MomentumEncoder
    from raysys.objectives.objective import ContrastiveObjective
    from raysys.train.deepspeed_setup import warmup_cosine
    from raysys.train.loop import model_inputs

    demo = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
    cfg = load_config(demo, [f"archive={archive}", "out=unused", "data.batch_size=16",
                             "data.eval_fraction=0.25", f"train.steps={steps}",
                             f"train.checkpoint_every={steps}", *overrides])
    pipe = open_archive(cfg.archive, cfg.data)

    def rows(split: str, augment: bool, epochs: int) -> dict:
        data = cfg.data.model_copy(deep=True)
        data.augment.enabled = augment
        plan = pipe.plan(split, epochs=epochs).rows()
        built = RowBuilder(data, pipe.stats, pipe.info.logs)(plan)
        return {k: v for k, v in built.items() if not k.startswith(("error.", "path.", "info."))}

    b = cfg.data.batch_size
    train = rows("train", True, epochs=-(-steps * b // len(pipe.entities.select("train"))))
    held_out = HeteroBatch.from_numpy(rows("eval", False, epochs=1))
    torch.manual_seed(cfg.seed)
    model = MultiViewModel(cfg.model, model_inputs(cfg, pipe))
    objective = ContrastiveObjective(cfg.objective, cfg.model.embed_dim)
    params = [*model.parameters(), *objective.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, betas=cfg.train.betas,
                            weight_decay=cfg.train.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(cfg.train))
    neg = cfg.objective.negatives
    key_encoder, queue = MomentumEncoder(model), EmbeddingQueue(neg.queue_size, 64)
    for step in range(steps):
        batch = HeteroBatch.from_numpy({k: v[step * b:(step + 1) * b] for k, v in train.items()})
        negatives = Negatives(queue.negatives(), queue.negative_ids()) if len(queue) else None
        encoded = model(batch)
        loss = objective(encoded, negatives)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()
        schedule.step()
        model.update_centre(encoded)
        key_encoder.update(model, neg.momentum)
        keys = key_encoder(batch)
        ids = keys.entity_id.unsqueeze(1).expand_as(keys.present)
        queue.enqueue(keys.embeddings["invariant"][keys.present], ids[keys.present])
    model.eval()
    with torch.no_grad():
        return {m: _mean_pairwise_cosine(
                    model.embed(m, held_out.views[m])[:, 0][held_out.views[m].present.bool()])
                for m in model.modalities}  # fmt: skip


@pytest.mark.slow
def test_demo_objective_keeps_per_modality_embeddings_apart(tmp_path) -> None:
    """Regression (issue 5): with raw audio features, global pooling and no embedding centre,
    the demo objective collapsed every modality's embeddings onto one point within a few
    steps (the queue and the LOEV pool mix modalities). The shipped defaults keep them apart."""
    from raysys.data.demo import make_demo_archive

    torch.set_num_threads(1)
    make_demo_archive(str(tmp_path / "archive"), entities=96, seed=0)
    steps = 12
    legacy = ["data.audio.standardize=none", "model.audio.pool=global",
              "model.image.pool=global", "model.centre_momentum=null"]
    before = _demo_spread(str(tmp_path / "archive"), legacy, steps)
    after = _demo_spread(str(tmp_path / "archive"), [], steps)
    assert before["audio"] > 0.99 and before["image"] > 0.99, before
    assert max(after.values()) < 0.97, after  # measured 0.83-0.92


def test_exports_older_than_the_quality_settings_keep_their_old_values() -> None:
    from raysys.data.config import DataConfig
    from raysys.train.export import upgrade_meta

    new_model = ModelConfig().model_dump(mode="json")
    new_data = DataConfig().model_dump(mode="json")
    old_model, old_data = dict(new_model), dict(new_data)
    del old_model["centre_momentum"]
    old_model["audio"] = {k: v for k, v in new_model["audio"].items() if k != "pool"}
    old_model["image"] = {k: v for k, v in new_model["image"].items() if k != "pool"}
    old_data["audio"] = {k: v for k, v in new_data["audio"].items() if k != "standardize"}
    meta = upgrade_meta({"model": old_model, "data": old_data})
    cfg = ModelConfig.model_validate(meta["model"])
    assert (cfg.audio.pool, cfg.image.pool, cfg.centre_momentum) == ("global", "global", None)
    assert DataConfig.model_validate(meta["data"]).audio.standardize == "none"
    # a current export is left as written
    assert upgrade_meta({"model": new_model, "data": new_data})["model"] == new_model


def test_audio_stats_pool_is_mean_and_std_per_band() -> None:
    """pool=stats: per (channel, band) the mean and std over frames; pool=time keeps the mean."""
    import torch

    from raysys.models.audio import TimePool

    x = torch.randn(3, 4, 8, 10)
    bands = x.reshape(3, 4, 2, 4, 10).mean(3)  # 8 bins -> 2 bands
    got = TimePool(2, stats=True)(x).reshape(3, 2, 4, 2)
    assert torch.allclose(got[:, 0], bands.mean(-1), atol=1e-6)
    assert torch.allclose(got[:, 1], bands.std(-1, unbiased=False), atol=1e-6)
    assert torch.allclose(TimePool(2)(x), bands.mean(-1).flatten(1), atol=1e-6)


def test_cross_head_is_its_own_projection_on_the_shared_backbone() -> None:
    model = make_model(cross_head=True, loev_heads=["pitch_shift"])
    assert model.output_names() == ["invariant", "cross", "pitch_shift"]
    out = model(make_batch())
    assert out.embeddings["cross"].shape == out.embeddings["invariant"].shape
    assert not torch.allclose(out.embeddings["cross"], out.embeddings["invariant"])
    with pytest.raises(ConfigError, match="reserved"):
        load_config(overrides=["model.loev_heads=[cross]"])


def test_cross_head_is_on_by_default_when_the_run_has_several_modalities() -> None:
    assert load_config(overrides=[]).model.cross_head is True  # audio, image, tabular
    assert load_config(overrides=["data.modalities=[audio]"]).model.cross_head is False
    assert load_config(overrides=["model.cross_head=false"]).model.cross_head is False
    assert load_config(overrides=[]).model.cross_backprop == 0.0
    for keys in (["data.modalities=[audio]", "model.cross_backprop=0.5"],
                 ["model.cross_head=false", "model.cross_backprop=1"]):
        with pytest.raises(ConfigError, match="cross_backprop=.* has no effect without a cross"):
            load_config(overrides=keys)
    with pytest.raises(ConfigError, match="no cross-modal pairs for a cross head"):
        load_config(overrides=["data.modalities=[audio]", "model.cross_head=true"])


def test_tdnn_keeps_frequency_until_the_frame_statistics() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=8, proj_hidden=16, audio={"kind": "tdnn", "widths": [32, 24]})
    model = MultiViewModel(cfg, ModelInputs(("audio",), C, audio_bins=F))
    assert cfg.audio.widths == [32, 24]
    views = ModalityViews(torch.randn(2, V, C, F, T), torch.ones(2, dtype=torch.bool))
    out = model(HeteroBatch(["a", "b"], torch.arange(2), {"audio": views}))
    assert out.backbone["audio"].shape == (2, V, 24)
    assert ModelConfig(audio={"kind": "tdnn"}).audio.widths == [256, 256, 256]
    assert ModelConfig().audio.widths == [16, 32, 64]
    with pytest.raises(ValueError, match=rf"expected \[N, {C}, {F}, T\]"):
        model.encoders["audio"](torch.randn(2, C, F + 1, T))


def test_tdnn_aggregate_all_pools_the_statistics_of_every_frame_layer() -> None:
    """ECAPA-style aggregation: mean and std over frames of each frame layer's output,
    concatenated, then one Linear; checked against the layers run by hand."""
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=8, proj_hidden=16,
                      audio={"kind": "tdnn", "widths": [12, 10, 6], "aggregate": "all"})
    model = MultiViewModel(cfg, ModelInputs(("audio",), C, audio_bins=F))
    encoder = model.encoders["audio"]
    x = torch.randn(3, C, F, T)
    frames = x.flatten(1, 2)
    l1 = encoder.trunk[1][0](frames)
    l2 = encoder.trunk[1][1](l1)
    l3 = encoder.last.layer(l2)
    stacked = torch.cat([l1, l2, l3], dim=1)
    stats = torch.cat([stacked.mean(-1), stacked.std(-1, unbiased=False)], dim=1)
    assert stats.shape == (3, 2 * (12 + 10 + 6))
    torch.testing.assert_close(encoder(x), encoder.last.out(stats))
    trunk, layers = encoder.trunk_layers(x)
    torch.testing.assert_close(trunk, encoder.trunk(x))
    assert list(layers) == ["layer1", "layer2"]
    torch.testing.assert_close(layers["layer1"], l1.mean(-1))
    torch.testing.assert_close(layers["layer2"], l2.mean(-1))
    with pytest.raises(ValueError, match="aggregate=all .* needs model.audio.kind=tdnn"):
        ModelConfig(audio={"kind": "cnn", "aggregate": "all"})


def naive_periodicity(h: torch.Tensor, module: torch.nn.Module) -> torch.Tensor:
    """Loop reference of `Periodicity`: mix, centre, sum of x[t] x[t + lag] over t / lag 0."""
    x = torch.nn.functional.conv1d(h, module.mix.weight, module.mix.bias)
    x = x - x.mean(-1, keepdim=True)
    frames = x.shape[-1]
    zero = (x * x).sum(-1) + 1e-6 * frames
    cols = [(x[..., : frames - lag] * x[..., lag:]).sum(-1) / zero if lag < frames
            else torch.zeros_like(zero) for lag in range(1, module.lags + 1)]
    return torch.stack(cols, dim=-1).flatten(1)


@pytest.mark.parametrize("frames", [20, 7])
def test_periodicity_matches_the_loop_reference_in_value_and_gradient(frames: int) -> None:
    from raysys.models.audio import Periodicity

    torch.manual_seed(0)
    module = Periodicity(width=5, channels=3, lags=9)  # 9 > 7 - 1: zero-padded lags
    h = torch.randn(4, 5, frames, dtype=torch.float64, requires_grad=True)
    module = module.double()
    out, ref = module(h), naive_periodicity(h, module)
    assert out.shape == (4, 3 * 9)
    torch.testing.assert_close(out, ref)
    weights = torch.randn_like(out)
    grads = [torch.autograd.grad((o * weights).sum(), [h, module.mix.weight]) for o in (out, ref)]
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want)


def test_periodicity_peaks_at_the_period_of_a_pulse_train() -> None:
    """The property tempo needs: the autocorrelation of a pulse every p frames is highest at
    lag p, whatever p, so two tempos give different features (a mean and std would not)."""
    from raysys.models.audio import Periodicity

    module = Periodicity(width=1, channels=1, lags=30)
    with torch.no_grad():
        module.mix.weight.fill_(1.0)
        module.mix.bias.zero_()
    for period in (6, 9, 14):
        pulses = torch.zeros(1, 1, 63)
        pulses[..., ::period] = 1.0
        assert int(module(pulses)[0].argmax()) + 1 == period


def test_tdnn_periodicity_joins_the_frame_statistics() -> None:
    torch.manual_seed(0)
    for aggregate, stacked in (("last", 6), ("all", 12 + 10 + 6)):
        cfg = ModelConfig(embed_dim=8, proj_hidden=16, loev_heads=["time_stretch"],
                          loev_plus_plus=True,
                          audio={"kind": "tdnn", "widths": [12, 10, 6], "aggregate": aggregate,
                                 "periodicity": 4, "periodicity_lags": 5})
        model = MultiViewModel(cfg, ModelInputs(("audio",), C, audio_bins=F))
        summary = model.encoders["audio"].last.stats if aggregate == "all" else \
            model.encoders["audio"].last[1]
        assert summary.out_dim == 2 * stacked + 4 * 5
        views = ModalityViews(torch.randn(2, V, C, F, T), torch.ones(2, dtype=torch.bool))
        _, heads, extra = model.inspect_modality("audio", views)
        assert extra["time_stretch_branch"].shape == (2, V, 6)
        assert torch.isfinite(heads["time_stretch"]).all()
    with pytest.raises(ValueError, match="periodicity .* needs model.audio.kind=tdnn"):
        ModelConfig(audio={"kind": "cnn", "periodicity": 4})


def test_embed_returns_a_loev_plus_plus_branch_as_inspection_does() -> None:
    model = make_model(loev_heads=["pitch_shift"], loev_plus_plus=True)
    views = make_batch().views["audio"]
    width = model.encoders["audio"].out_dim
    assert model.embedding_dims("audio") == {
        **{h: model.cfg.embed_dim for h in model.output_names()}, "pitch_shift_branch": width}
    assert "pitch_shift_branch" not in model.embedding_dims("image")  # image has no branch
    branch = model.inspect_modality("audio", views)[2]["pitch_shift_branch"]
    torch.testing.assert_close(model.embed("audio", views, "pitch_shift_branch", False), branch)
    torch.testing.assert_close(model.embed("audio", views, "pitch_shift_branch"),
                               torch.nn.functional.normalize(branch, dim=-1))
    with pytest.raises(ValueError, match="unknown head 'pitch_shift_branch' for image"):
        model.embed("image", make_batch().views["image"], "pitch_shift_branch")


def test_loev_branch_periodicity_gives_only_that_branch_the_autocorrelation() -> None:
    """The time branch reads tempo; the shared backbone and the other branches keep the plain
    statistics (and their sizes), so the invariant head is built as without it."""
    from raysys.models.audio import Periodicity

    tdnn = {"kind": "tdnn", "widths": [12, 10, 6], "aggregate": "all", "periodicity_lags": 5}
    cfg = ModelConfig(embed_dim=8, proj_hidden=16, loev_heads=["pitch_shift", "time_stretch"],
                      loev_plus_plus=True, audio=tdnn,
                      loev_branch_periodicity={"time_stretch": 3})
    model = MultiViewModel(cfg, ModelInputs(("audio",), C, audio_bins=F))
    has = lambda m: any(isinstance(x, Periodicity) for x in m.modules())
    assert has(model.branches["time_stretch"]["audio"])
    assert not has(model.encoders["audio"]) and not has(model.branches["pitch_shift"]["audio"])
    assert model.branches["time_stretch"]["audio"].stats.out_dim == 2 * 28 + 3 * 5
    views = ModalityViews(torch.randn(2, V, C, F, T), torch.ones(2, dtype=torch.bool))
    _, heads, extra = model.inspect_modality("audio", views)
    assert extra["time_stretch_branch"].shape == (2, V, 6)
    assert torch.isfinite(heads["time_stretch"]).all()
    base = {"loev_heads": ["time_stretch"], "loev_plus_plus": True, "audio": tdnn}
    for bad, match in [({"loev_branch_periodicity": {"tempo": 3}}, "not in loev_heads"),
                       ({"loev_plus_plus": False, "loev_heads": ["time_stretch"],
                         "audio": tdnn, "loev_branch_periodicity": {"time_stretch": 3}},
                        "needs loev_plus_plus=true"),
                       ({"audio": {"kind": "cnn"}, "loev_branch_periodicity": {"time_stretch": 3}},
                        "needs model.audio.kind=tdnn"),
                       ({"loev_branch_periodicity": {"time_stretch": 0}}, "must be >= 1")]:
        with pytest.raises(ValueError, match=match):
            ModelConfig(**{**base, **bad})


@pytest.mark.parametrize("share", [0.0, 0.25])
def test_cross_backprop_scales_what_the_cross_head_sends_to_the_encoder(share: float) -> None:
    full = make_model(cross_head=True, cross_backprop=1.0)
    part = make_model(cross_head=True, cross_backprop=share)
    grads = []
    for model in (full, part):
        out = model(make_batch())
        out.embeddings["cross"].square().sum().backward()
        grads.append(model.encoders["audio"].last[-1].weight.grad)
    torch.testing.assert_close(part(make_batch()).embeddings["cross"],
                               full(make_batch()).embeddings["cross"])  # same values
    torch.testing.assert_close(grads[1], grads[0] * share)
