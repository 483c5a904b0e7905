"""The composed objective against naive loop references (values and gradients)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raysys.config import ConfigError, load_config
from raysys.models.multimodal import EncodedViews
from raysys.objectives.config import ObjectiveConfig
from raysys.objectives.multiview import Negatives
from raysys.objectives.objective import ContrastiveObjective

MODS = ("audio", "image", "tabular")
D = 6


@pytest.fixture(autouse=True)
def float64():
    """Reference comparisons at double precision (restored afterwards for other modules)."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def make_encoded(
    b: int = 6, mods: tuple[str, ...] = MODS, v: int = 2, seed: int = 0,
    heads: tuple[str, ...] = ("invariant",), ids: list[int] | None = None, missing: bool = True,
) -> EncodedViews:  # fmt: skip
    g = torch.Generator().manual_seed(seed)
    s = len(mods) * v
    present = torch.ones(b, s, dtype=torch.bool)
    if missing and len(mods) > 1:  # entity 1 lacks modality 1, entity 2 lacks modality 0
        present[1, v : 2 * v] = False
        present[2, :v] = False
    emb = {}
    for h in heads:
        e = torch.randn(b, s, D, generator=g)
        emb[h] = torch.where(present[..., None], e, torch.zeros_like(e)).requires_grad_(True)
    pitch = torch.rand(b, s, generator=g) > 0.5
    pitch[:, v:] = False  # only the first modality records pitch_shift
    return EncodedViews(
        embeddings=emb, present=present,
        entity_id=torch.tensor(ids if ids is not None else [10 * i + 3 for i in range(b)]),
        modalities=mods, views_per_modality=v,
        slot_modality=torch.arange(len(mods)).repeat_interleave(v),
        applied={"pitch_shift": pitch, "gain": torch.rand(b, s, generator=g) > 0.5},
    )  # fmt: skip


def objective(**cfg) -> ContrastiveObjective:
    return ContrastiveObjective(ObjectiveConfig.model_validate(cfg), D)


# ---------------------------------------------------------------- naive references


def ref_direction(q, k, q_ok, k_ok, q_ids, k_ids, tau, nbr=(0, 1.0)):
    """Mean over counting rows of -sum_p (w_p / sum w) log softmax; None when no row counts.

    `nbr = (n, w)`: the keys of the entities of the n best-scoring other-entity keys are
    positives of weight w too (own keys weigh 1).
    """
    losses = []
    for i in range(q.shape[0]):
        if not q_ok[i]:
            continue
        pool = [j for j in range(k.shape[0]) if k_ok[j]]
        if not any(k_ids[j] == q_ids[i] for j in pool):
            continue
        logits = torch.stack([F.cosine_similarity(q[i], k[j], dim=0) / tau for j in pool])
        others = sorted((j for j in pool if k_ids[j] != q_ids[i]),
                        key=lambda j: -logits[pool.index(j)].item())  # fmt: skip
        near = {int(k_ids[j]) for j in others[: nbr[0]]}
        w = {j: 1.0 if k_ids[j] == q_ids[i] else nbr[1] for j in pool
             if k_ids[j] == q_ids[i] or int(k_ids[j]) in near}  # fmt: skip
        lse = torch.logsumexp(logits, 0)
        total = sum(w.values())
        losses.append(-sum(wp * (logits[pool.index(p)] - lse) for p, wp in w.items()) / total)
    return sum(losses) / len(losses) if losses else None


def ref_binary(enc, tau, mode="all_pairs", anchor="audio", weights=None, cross=None,
               nbr=(0, 1.0)):  # fmt: skip
    """`cross`: the head that scores pairs of two different modalities (else invariant)."""
    weights = weights or {}
    pres, ids = enc.present, enc.entity_id
    v = enc.views_per_modality
    s = pres.shape[1]
    num, den = 0.0, 0.0
    for a in range(s):
        for b in range(a + 1, s):
            ma, mb = enc.modalities[a // v], enc.modalities[b // v]
            if mode == "anchor" and anchor not in (ma, mb):
                continue
            w = weights.get("-".join(sorted((ma, mb))), 1.0)
            if w == 0:
                continue
            emb = enc.embeddings[cross if cross and ma != mb else "invariant"]
            d1 = ref_direction(emb[:, a], emb[:, b], pres[:, a], pres[:, b], ids, ids, tau, nbr)
            d2 = ref_direction(emb[:, b], emb[:, a], pres[:, b], pres[:, a], ids, ids, tau, nbr)
            terms = [d for d in (d1, d2) if d is not None]
            if terms:
                num = num + w * sum(terms) / len(terms)
                den += w
    return num / den


def grads(loss, tensors):
    return torch.autograd.grad(loss, tensors, retain_graph=True, allow_unused=True)


def assert_same(loss, ref, tensors):
    torch.testing.assert_close(loss, torch.as_tensor(ref))
    for g1, g2 in zip(grads(loss, tensors), grads(ref, tensors), strict=True):
        torch.testing.assert_close(g1, g2)


# ---------------------------------------------------------------- binary


@pytest.mark.parametrize("chunk", [None, 4])
def test_all_pairs_with_missing_views_weights_and_duplicates(chunk: int | None) -> None:
    enc = make_encoded(ids=[3, 13, 23, 33, 13, 53])  # entities 1 and 4 share an id: positives
    weights = {"audio-image": 2.0, "image-tabular": 0.0, "tabular-tabular": 0.5}
    obj = objective(pair_weights=weights, temperature=0.2, negatives={"chunk_size": chunk})
    out = obj(enc)
    ref = ref_binary(enc, 0.2, weights=weights)
    assert_same(out["binary"], ref, [enc.embeddings["invariant"]])
    torch.testing.assert_close(out["loss"], out["binary"])
    # 15 slot pairs minus the 4 image-tabular ones, all existing
    assert out["binary/pairs"].item() == 11
    assert "binary/image-tabular" not in out  # weight 0: dropped, not computed
    assert set(out) >= {"binary/audio-image", "binary/audio-audio", "pool/keys"}


@pytest.mark.parametrize("chunk", [None, 4])
def test_cross_head_takes_the_cross_modal_pairs(chunk: int | None) -> None:
    enc = make_encoded(heads=("invariant", "cross"), seed=5)
    weights = {"audio-image": 2.0, "tabular-tabular": 0.5}
    obj = objective(pair_weights=weights, temperature=0.2, negatives={"chunk_size": chunk})
    out = obj(enc)
    tensors = [enc.embeddings["invariant"], enc.embeddings["cross"]]
    assert_same(out["binary"], ref_binary(enc, 0.2, weights=weights, cross="cross"), tensors)
    assert all(g.abs().sum() > 0 for g in grads(out["binary"], tensors))


@pytest.mark.parametrize("chunk", [None, 4])
@pytest.mark.parametrize(("n", "w"), [(1, 1.0), (2, 0.5)])
def test_neighbour_positives_match_the_reference(chunk: int | None, n: int, w: float) -> None:
    enc = make_encoded(b=7, ids=[3, 13, 23, 33, 13, 53, 63], seed=4)  # 1 and 4 share an id
    obj = objective(temperature=0.2, neighbour_positives=n, neighbour_weight=w,
                    negatives={"chunk_size": chunk})  # fmt: skip
    out = obj(enc)
    ref = ref_binary(enc, 0.2, nbr=(n, w))
    assert_same(out["binary"], ref, [enc.embeddings["invariant"]])
    plain = ref_binary(enc, 0.2)
    assert abs(out["binary"].item() - plain.item()) > 1e-3  # the neighbours change the loss


def test_neighbours_are_other_entities_and_queued_copies_leave_the_softmax() -> None:
    from raysys.objectives.multiview import nearest_other_ids
    from raysys.objectives.targets import NO_ID, IdTargets

    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.9, 0.2], [1.0, 0.0]])
    ids = torch.tensor([0, 1, 2, 9])
    ok = torch.tensor([True, True, True, False])  # key 3 is padding: never a neighbour
    near = nearest_other_ids(q, torch.tensor([0, 1, 5]), k, ids, ok, 1, None)
    # query 2's entity (5) has no key: no neighbour, so it still does not count
    assert near.tolist() == [[2], [2], [NO_ID]]
    t = IdTargets(torch.tensor([0, 1, 5]), torch.tensor([0, 1, 2, 2]), q_neighbour_ids=near,
                  neighbour_weight=0.5,
                  k_negative_only=torch.tensor([False, False, False, True]))  # fmt: skip
    weights, mask = t.dense()
    assert weights.tolist() == [[1, 0, 0.5, 0], [0, 1, 0.5, 0], [0, 0, 0, 0]]
    assert mask[:2, 3].tolist() == [False, False]  # a queued copy of a neighbour: not a negative
    with pytest.raises(ValueError, match="q_neighbour_ids must be"):
        IdTargets(torch.arange(3), torch.arange(3), q_neighbour_ids=torch.zeros(2, 1).long())


def test_a_modality_absent_for_every_entity_drops_its_pairs() -> None:
    enc = make_encoded(seed=11)
    enc.present[:, 4:] = False  # no tabular at all: only audio/image pairs exist
    out = objective(temperature=0.3)(enc)
    assert_same(out["binary"], ref_binary(enc, 0.3), [enc.embeddings["invariant"]])
    assert out["binary/pairs"].item() == 6
    assert out["binary/audio-tabular"].item() == 0


def test_model_and_objective_train_end_to_end() -> None:
    from raysys.data.batch import HeteroBatch, ModalityViews
    from raysys.models import ModelConfig, ModelInputs, MultiViewModel

    torch.manual_seed(0)
    model_cfg = ModelConfig(embed_dim=D, proj_hidden=8, audio={"widths": [4, 8]},
                            loev_heads=["pitch_shift"])  # fmt: skip
    model = MultiViewModel(model_cfg, ModelInputs(("audio",), audio_channels=2))
    obj = objective(loev={"enabled": True, "augmentations": ["pitch_shift"]})
    x = torch.randn(8, 2, 2, 8, 8)
    flags = {"applied": torch.rand(8, 2) > 0.5}
    views = {"audio": ModalityViews(x, torch.ones(8, dtype=torch.bool), {"pitch_shift": flags})}
    batch = HeteroBatch([str(i) for i in range(8)], torch.arange(8), views)
    opt = torch.optim.Adam([*model.parameters(), *obj.parameters()], lr=1e-2)
    losses = []
    for _ in range(20):
        out = obj(model(batch))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < 0.8 * losses[0]


def test_anchor_mode_with_missing_views() -> None:
    enc = make_encoded(seed=1)
    out = objective(mode="anchor", anchor_modality="image", pair_weights={"image-audio": 3.0})(enc)
    ref = ref_binary(enc, 0.07, mode="anchor", anchor="image", weights={"audio-image": 3.0})
    assert_same(out["binary"], ref, [enc.embeddings["invariant"]])
    assert out["binary/pairs"].item() == 1 + 4 + 4  # image0-image1, 4 audio-image, 4 image-tab
    with pytest.raises(ValueError, match="anchor_modality: 'tabular' is not among"):
        objective(mode="anchor", anchor_modality="tabular")(make_encoded(mods=("audio", "image")))


def test_queue_negatives_extend_the_pool_but_never_add_positives() -> None:
    enc = make_encoded(seed=2, mods=("audio",))
    g = torch.Generator().manual_seed(5)
    queue = Negatives(torch.randn(3, D, generator=g), torch.tensor([3, 999, 998]))
    out = objective(temperature=0.5)(enc, queue)
    emb, ids = enc.embeddings["invariant"], enc.entity_id
    q, k = emb[:, 0], emb[:, 1]
    # entity 0 (id 3) has a queued key: it is dropped from row 0's softmax (false-negative guard)
    terms = []
    for qq, kk in ((q, k), (k, q)):
        rows = []
        for i in range(len(ids)):
            cols = [kk[j] for j in range(len(ids))] + [queue.keys[c] for c in (1, 2)]
            if ids[i] != 3:
                cols.append(queue.keys[0])
            logits = torch.stack([F.cosine_similarity(qq[i], c, dim=0) / 0.5 for c in cols])
            rows.append(torch.logsumexp(logits, 0) - logits[i])
        terms.append(sum(rows) / len(rows))
    assert_same(out["binary"], (terms[0] + terms[1]) / 2, [emb])
    assert out["pool/keys"].item() == len(ids) + 3


def test_degenerate_inputs_give_zero_attached_or_raise() -> None:
    one_view = make_encoded(mods=("audio",), v=1)
    out = objective()(one_view)
    assert out["loss"].item() == 0 and out["binary/pairs"].item() == 0
    out["loss"].backward()  # attached: backward runs, gradient zero
    assert (one_view.embeddings["invariant"].grad == 0).all()
    masked = make_encoded()
    masked.present[:] = False
    assert objective()(masked)["binary"].item() == 0
    with pytest.raises(ValueError, match="no relevance lists"):
        objective(w_cont=1.0)(make_encoded())
    with pytest.raises(ValueError, match="needs the model head 'pitch_shift'"):
        objective(loev={"enabled": True, "augmentations": ["pitch_shift"]})(make_encoded())


# ---------------------------------------------------------------- continuous (ListNet)


def with_relevance(enc: EncodedViews) -> EncodedViews:
    ids = enc.entity_id.tolist()
    enc.relevance_entity_id = torch.tensor([
        [ids[1], ids[2], ids[3], 777],   # 777 is not in the pool: masked
        [ids[0], 777, -1, -1],           # one valid candidate only: the list does not count
        [ids[0], ids[4], ids[5], ids[1]],
        [ids[2], ids[0], -1, -1],
        [-1, -1, -1, -1],
        [ids[3], ids[2], ids[0], -1],
    ])  # fmt: skip
    enc.relevance = torch.tensor([[90.0, 10, 50, 70], [80, 20, 0, 0], [5, 60, 100, 30],
                                  [40, 40, 0, 0], [0, 0, 0, 0], [0, 100, 25, 0]])  # fmt: skip
    enc.relevance_mask = enc.relevance_entity_id != -1
    return enc


def ref_listnet(enc, tau, tau_r):
    emb, pres = enc.embeddings["invariant"], enc.present
    ids = enc.entity_id.tolist()

    def entity(i):
        views = [F.normalize(emb[i, s], dim=0) for s in range(pres.shape[1]) if pres[i, s]]
        return F.normalize(sum(views), dim=0)

    losses = []
    for i in range(len(ids)):
        cands = [(ids.index(c), r) for c, r, m in zip(enc.relevance_entity_id[i].tolist(),
                 enc.relevance[i].tolist(), enc.relevance_mask[i].tolist(), strict=True)
                 if m and c in ids]  # fmt: skip
        if len(cands) < 2:
            continue
        p = torch.softmax(torch.tensor([r / 100 / tau_r for _, r in cands]), 0)
        s = torch.stack([entity(i) @ entity(j) / tau for j, _ in cands])
        losses.append(-(p * torch.log_softmax(s, 0)).sum())
    return sum(losses) / len(losses), len(losses)


def test_listnet_composition_values_and_grads() -> None:
    enc = with_relevance(make_encoded(seed=3))
    out = objective(w_bin=0.5, w_cont=2.0, temperature=0.1, listnet_target_temperature=0.3)(enc)
    ref_cont, n_lists = ref_listnet(enc, 0.1, 0.3)
    emb = [enc.embeddings["invariant"]]
    assert_same(out["continuous"], ref_cont, emb)
    assert out["continuous/lists"].item() == n_lists == 4
    assert_same(out["loss"], 0.5 * ref_binary(enc, 0.1) + 2.0 * ref_cont, emb)


# ---------------------------------------------------------------- LOEV


def ref_loev(enc, head, tau, tracked):
    """Multi-positive InfoNCE over flattened present views with the LOEV positive rule."""
    b, s = enc.present.shape
    z = enc.embeddings[head].reshape(b * s, D)
    ent = enc.entity_id.repeat_interleave(s)
    ok = enc.present.reshape(-1)
    applied = enc.applied[head].reshape(-1) if head in tracked else torch.zeros_like(ok)
    losses = []
    for i in range(b * s):
        if not ok[i]:
            continue
        pool = [j for j in range(b * s) if ok[j] and j != i]
        pos = [j for j in pool if ent[j] == ent[i] and not applied[i] and not applied[j]]
        if not pos:
            continue
        logits = torch.stack([F.cosine_similarity(z[i], z[j], dim=0) / tau for j in pool])
        lse = torch.logsumexp(logits, 0)
        losses.append(-sum(logits[pool.index(p)] - lse for p in pos) / len(pos))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("chunk", [None, 5])
def test_loev_heads_values_grads_and_weights(chunk: int | None) -> None:
    enc = make_encoded(seed=4, heads=("invariant", "pitch_shift", "gain"))
    loev = {"enabled": True, "augmentations": ["pitch_shift", "gain"],
            "weights": {"invariant": 2.0, "gain": 0.5}, "temperature": 0.3}  # fmt: skip
    out = objective(w_bin=0.0, w_loev=1.5, loev=loev, negatives={"chunk_size": chunk})(enc)
    tracked = ("pitch_shift", "gain")
    refs = {h: ref_loev(enc, h, 0.3, tracked) for h in ("invariant", *tracked)}
    params = list(enc.embeddings.values())
    for h, ref in refs.items():
        assert_same(out[f"loev/{h}"], ref, params)
    mean = (2.0 * refs["invariant"] + refs["pitch_shift"] + 0.5 * refs["gain"]) / 3.5
    assert_same(out["loev"], mean, params)
    assert_same(out["loss"], 1.5 * mean, params)
    assert "binary" not in out


def test_loev_unrecorded_augmentation_is_an_error() -> None:
    enc = make_encoded(heads=("invariant", "time_stretch"))
    cfg = {"enabled": True, "augmentations": ["time_stretch"]}
    with pytest.raises(ValueError, match=r"\['time_stretch'\] not recorded in the batch"):
        objective(loev=cfg)(enc)


# ---------------------------------------------------------------- COLA, temperature, NaN


def test_cola_bilinear_term_matches_reference() -> None:
    enc = make_encoded(seed=6, mods=("audio",), heads=("invariant", "cola"))
    obj = objective(w_bin=0.0, cola=True, w_cola=1.0)
    out = obj(enc)
    e, w = enc.embeddings["cola"], obj.cola_weight
    s = e[:, 0] @ w @ e[:, 1].T  # no temperature
    target = torch.arange(s.shape[0])
    ref = (F.cross_entropy(s, target) + F.cross_entropy(s.T, target)) / 2
    assert_same(out["cola"], ref, [e, w])


def test_learnable_temperature_stays_within_clamp_and_recovers() -> None:
    enc = make_encoded(seed=7, mods=("audio",))
    obj = objective(temperature=0.05, learnable_temperature=True, temperature_min=0.03,
                    temperature_max=0.1)  # fmt: skip
    opt = torch.optim.SGD(obj.parameters(), lr=5.0)
    aligned = enc.embeddings["invariant"].detach().clone()
    aligned[:, 1] = aligned[:, 0]  # perfectly aligned positives: the loss wants τ -> 0
    enc.embeddings["invariant"] = aligned
    seen = []
    for _ in range(30):
        out = obj(enc)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        seen.append(out["temperature"].item())
    assert min(seen) >= 0.03 - 1e-12 and max(seen) <= 0.1 + 1e-12
    assert obj.temperature().item() == pytest.approx(0.03)
    assert obj.temperature.log_tau.item() < math.log(0.03)  # drifted past the bound ...
    obj.temperature.log_tau.grad = None
    (-obj.temperature()).backward()  # ... and still gets the gradient that brings it back
    assert obj.temperature.log_tau.grad.item() < 0
    obj.temperature.clamp_()
    assert obj.temperature.log_tau.item() == pytest.approx(math.log(0.03))


def test_nan_in_an_embedding_propagates_to_every_term_using_it() -> None:
    enc = with_relevance(make_encoded(seed=8, heads=("invariant", "pitch_shift", "cola")))
    with torch.no_grad():
        enc.embeddings["invariant"][0, 0, 0] = float("nan")
    cfg = dict(w_cont=1.0, cola=True, loev={"enabled": True, "augmentations": ["pitch_shift"]})
    out = objective(**cfg)(enc)
    for name in ("loss", "binary", "continuous", "loev", "loev/invariant"):
        assert torch.isnan(out[name]), name
    assert torch.isfinite(out["cola"]) and torch.isfinite(out["loev/pitch_shift"])
    # anchor mode: entity 2 lacks the anchor (audio), so its views are in no pair — still NaN
    enc = make_encoded(seed=8)
    with torch.no_grad():
        enc.embeddings["invariant"][2, 2, 0] = float("inf")
    assert torch.isnan(objective(mode="anchor")(enc)["binary"])


def test_every_term_is_reported() -> None:
    enc = with_relevance(make_encoded(seed=9, heads=("invariant", "pitch_shift", "cola")))
    cfg = dict(w_cont=1.0, cola=True, loev={"enabled": True, "augmentations": ["pitch_shift"]})
    out = objective(**cfg)(enc)
    terms = {"binary", "continuous", "loev", "loev/invariant", "loev/pitch_shift", "cola"}
    diagnostics = {"binary/pairs", "pool/keys", "pool/entities", "temperature",
                   "continuous/lists"}  # fmt: skip
    assert terms | diagnostics | {"loss"} <= set(out)
    assert all(t.dim() == 0 for t in out.values())
    expected = out["binary"] + out["continuous"] + out["loev"] + out["cola"]
    torch.testing.assert_close(out["loss"], expected)


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="objective.pair_weights: .*'audio-video' is not"):
        load_config(overrides=["objective.pair_weights={audio-video: 1.0}"])
    with pytest.raises(ConfigError, match="name the same pair"):
        load_config(overrides=["objective.pair_weights={audio-image: 1.0, image-audio: 2.0}"])
    with pytest.raises(ConfigError, match="unknown head 'pitch'"):
        load_config(overrides=["objective.loev.weights={pitch: 1.0}"])
    with pytest.raises(ConfigError, match="no term enabled"):
        load_config(overrides=["objective.w_bin=0"])
    with pytest.raises(ConfigError, match="objective.negatives.chunk_size"):
        load_config(overrides=["objective.negatives.chunk_size=0"])
    cfg = load_config(overrides=["objective.pair_weights={image-audio: 0.5}"])
    assert cfg.objective.pair_weight("audio", "image") == 0.5


# ---------------------------------------------------------------- two workers (gloo)


def _gather_worker(rank: int, init: str, out_dir: str, cfg: dict) -> None:
    import torch.distributed as dist

    torch.set_default_dtype(torch.float64)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        enc = make_encoded(b=6, seed=12, missing=False)
        half = slice(3 * rank, 3 * rank + 3)
        local = EncodedViews(
            embeddings={"invariant": enc.embeddings["invariant"][half].detach().requires_grad_()},
            present=enc.present[half], entity_id=enc.entity_id[half], modalities=MODS,
            views_per_modality=2, slot_modality=enc.slot_modality,
            applied={k: v[half] for k, v in enc.applied.items()},
        )  # fmt: skip
        out = objective(**cfg, negatives={"gather": True})(local)
        out["loss"].backward()
        result = {"out": {k: v.detach() for k, v in out.items()},
                  "grad": local.embeddings["invariant"].grad}  # fmt: skip
        torch.save(result, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "cfg", [{"loev": {"enabled": True}}, {"neighbour_positives": 2, "neighbour_weight": 0.5}]
)
def test_gathered_pool_matches_one_process_on_the_whole_batch(tmp_path, cfg) -> None:
    """Mean of the workers' losses = the one-process loss; owner grads / W = its grads."""
    import torch.multiprocessing as mp

    init = f"file://{tmp_path}/rendezvous"
    mp.spawn(_gather_worker, args=(init, str(tmp_path), cfg), nprocs=2, join=True)
    res = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    # no missing view: both halves have as many counting rows, so the mean of means is the mean
    enc = make_encoded(b=6, seed=12, missing=False)
    full = objective(**cfg)(enc)
    names = ("binary", "loss") + (("loev/invariant",) if "loev" in cfg else ())
    for name in names:
        torch.testing.assert_close((res[0]["out"][name] + res[1]["out"][name]) / 2, full[name])
    assert res[0]["out"]["pool/entities"].item() == 6
    (grad,) = torch.autograd.grad(full["loss"], enc.embeddings["invariant"])
    torch.testing.assert_close(torch.cat([r["grad"] for r in res]) / 2, grad)


@pytest.mark.parametrize("learnable", [False, True])
def test_temperature_loads_a_state_saved_with_a_0d_log_tau(learnable):
    from raysys.objectives.temperature import Temperature

    temp = Temperature(0.1, learnable=learnable)
    assert temp.log_tau.shape == (1,) and temp().shape == ()
    temp.load_state_dict({"log_tau": torch.tensor(math.log(0.05))})  # a pre-[1] checkpoint
    assert temp.log_tau.shape == (1,)
    assert temp().item() == pytest.approx(0.05)
