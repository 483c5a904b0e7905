"""The loss primitives against naive loop references (values and gradients), plus edge cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from raysys.losses import (
    IdTargets,
    bilinear_scores,
    info_nce,
    listnet,
    loev_id_targets,
    loev_ids,
    loev_positive_masks,
    soft_target_cross_entropy,
)


def ref_soft_ce(s, t, mask, tau):
    """Loop reference: mean over rows with targets of -Σ_j p_ij log_softmax_j(s_ij / τ)."""
    rows = []
    for i in range(s.shape[0]):
        cols = [j for j in range(s.shape[1]) if mask[i, j]]
        tsum = sum(float(t[i, j]) for j in cols)
        if tsum <= 0:
            continue
        z = torch.stack([s[i, j] / tau for j in cols])
        lse = torch.logsumexp(z, 0)
        rows.append(-sum(t[i, j] / tsum * (s[i, j] / tau - lse) for j in cols))
    return torch.stack(rows).mean() if rows else s.sum() * 0


def cosine_matrix(q, k):
    """Plain cosine scores, one pair at a time."""
    rows = []
    for i in range(q.shape[0]):
        row = [torch.dot(q[i], k[j]) / (q[i].norm() * k[j].norm()) for j in range(k.shape[0])]
        rows.append(torch.stack(row))
    return torch.stack(rows)


def assert_close_values_and_grads(fn, ref, inputs):
    """fp32 implementation vs fp64 reference: values and input gradients within 1e-5 relative."""
    x32 = [x.detach().float().requires_grad_() for x in inputs]
    x64 = [x.detach().double().requires_grad_() for x in inputs]
    got, want = fn(*x32), ref(*x64)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-7)
    g32 = torch.autograd.grad(got, x32)
    g64 = torch.autograd.grad(want, x64)
    for a, b in zip(g32, g64, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-6)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)


def test_soft_target_ce_dense_matches_reference(gen):
    s = torch.randn(6, 8, generator=gen)
    t = torch.rand(6, 8, generator=gen) * (torch.rand(6, 8, generator=gen) > 0.5)
    t[2] = 0  # a row without targets does not count
    mask = torch.rand(6, 8, generator=gen) > 0.3
    assert_close_values_and_grads(
        lambda s_: soft_target_cross_entropy(s_, t, temperature=0.5, mask=mask),
        lambda s_: ref_soft_ce(s_, t.double(), mask, 0.5),
        [s],
    )


def test_pair_form_equals_score_matrix(gen):
    q, k = torch.randn(5, 4, generator=gen), torch.randn(7, 4, generator=gen)
    t = (torch.rand(5, 7, generator=gen) > 0.6).float()
    assert_close_values_and_grads(
        lambda q_, k_: soft_target_cross_entropy((q_, k_), t, temperature=0.3),
        lambda q_, k_: ref_soft_ce(q_ @ k_.T, t.double(), torch.ones(5, 7, dtype=bool), 0.3),
        [q, k],
    )


def test_info_nce_diagonal_matches_reference(gen):
    q, k = torch.randn(6, 5, generator=gen), torch.randn(6, 5, generator=gen)
    eye, full = torch.eye(6), torch.ones(6, 6, dtype=torch.bool)
    assert_close_values_and_grads(
        lambda q_, k_: info_nce(q_, k_, temperature=0.07),
        lambda q_, k_: ref_soft_ce(cosine_matrix(q_, k_), eye.double(), full, 0.07),
        [q, k],
    )
    dot = info_nce(q, k, normalize=False, temperature=2.0)
    torch.testing.assert_close(dot, F.cross_entropy(q @ k.T / 2.0, torch.arange(6)))


def test_info_nce_multi_positive_with_logits_mask(gen):
    """Supervised-contrastive form: same-label pairs positive, self-pairs out of the pool."""
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 3])
    pos = (labels[:, None] == labels[None, :]) & ~torch.eye(7, dtype=torch.bool)
    pool = ~torch.eye(7, dtype=torch.bool)
    z = torch.randn(7, 3, generator=gen)
    assert_close_values_and_grads(
        lambda z_: info_nce(z_, z_, positive_mask=pos, logits_mask=pool, temperature=0.1),
        lambda z_: ref_soft_ce(cosine_matrix(z_, z_), pos.double(), pool, 0.1),
        [z],
    )


def test_identical_embeddings_give_log_pool_size():
    """Analytic case: all scores equal -> the softmax is uniform -> loss = log(M)."""
    q = torch.ones(5, 3)
    assert info_nce(q, q).item() == pytest.approx(math.log(5), rel=1e-6)
    k = torch.ones(9, 3)
    pos = torch.zeros(5, 9, dtype=torch.bool)
    pos[:, 0] = True
    assert info_nce(q, k, positive_mask=pos).item() == pytest.approx(math.log(9), rel=1e-6)


def test_learnable_temperature_gradient(gen):
    q, k = torch.randn(4, 3, generator=gen), torch.randn(4, 3, generator=gen)
    eye, full = torch.eye(4).double(), torch.ones(4, 4, dtype=torch.bool)
    for chunk in (None, 3):
        assert_close_values_and_grads(
            lambda tau: info_nce(q, k, temperature=tau, chunk_size=chunk),  # noqa: B023
            lambda tau: ref_soft_ce(cosine_matrix(q.double(), k.double()), eye, full, tau),
            [torch.tensor(0.2)],
        )


def ref_listnet(s, rel, mask, tau, tau_r):
    rows = []
    for i in range(s.shape[0]):
        cols = [j for j in range(s.shape[1]) if mask[i, j]]
        if not cols:
            continue
        p = torch.softmax(torch.stack([rel[i, j] / tau_r for j in cols]), 0)
        logq = torch.log_softmax(torch.stack([s[i, j] / tau for j in cols]), 0)
        rows.append(-(p * logq).sum())
    return torch.stack(rows).mean()


def test_listnet_matches_reference(gen):
    s = torch.randn(4, 6, generator=gen)
    rel = torch.randint(0, 101, (4, 6), generator=gen).float() / 100
    mask = torch.rand(4, 6, generator=gen) > 0.3
    mask[1] = False  # a query without candidates does not count
    mask[2, :] = False
    mask[2, 3] = True  # one candidate: loss 0 for that row
    assert_close_values_and_grads(
        lambda s_: listnet(s_, rel, temperature=0.5, target_temperature=0.1, mask=mask),
        lambda s_: ref_listnet(s_, rel.double(), mask, 0.5, 0.1),
        [s],
    )


def test_listnet_rejects_unscaled_ratings():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        listnet(torch.zeros(2, 3), torch.full((2, 3), 50.0))


def test_loev_masks_match_definition():
    ent = torch.tensor([7, 7, 7, 3, 3, 9])
    applied = {"pitch": torch.tensor([1, 0, 0, 1, 0, 0], dtype=torch.bool)}
    masks = loev_positive_masks(ent, applied)
    for a in range(6):
        for b in range(6):
            same = a != b and ent[a] == ent[b]
            assert masks["invariant"][a, b] == same
            untouched = not applied["pitch"][a] and not applied["pitch"][b]
            assert masks["pitch"][a, b] == (same and untouched)


def test_loev_ids_give_the_same_loss_as_masks(gen):
    ent = torch.tensor([5, 5, 5, 8, 8, 2, 2, 2])
    applied = {
        "pitch": torch.tensor([1, 0, 0, 0, 1, 0, 0, 1], dtype=torch.bool),
        "tempo": torch.tensor([0, 0, 1, 0, 0, 1, 1, 0], dtype=torch.bool),
    }
    z = torch.randn(8, 4, generator=gen)
    masks = loev_positive_masks(ent, applied)
    pool = ~torch.eye(8, dtype=torch.bool)
    id_targets = loev_id_targets(ent, applied)
    assert set(loev_ids(ent, applied)) == set(masks) == {"invariant", "pitch", "tempo"}
    for head, mask in masks.items():
        dense = info_nce(z, z, positive_mask=mask, logits_mask=pool, temperature=0.1)
        for chunk in (None, 3):
            compact = info_nce(
                z, z, positive_mask=id_targets[head], temperature=0.1, chunk_size=chunk
            )
            torch.testing.assert_close(compact, dense)


def test_bilinear_scores_and_cola_loss(gen):
    a, b, w = torch.randn(4, 3, generator=gen), torch.randn(5, 2, generator=gen), torch.randn(3, 2)
    ref = torch.tensor([[float(a[i] @ w @ b[j]) for j in range(5)] for i in range(4)])
    torch.testing.assert_close(bilinear_scores(a, b, w), ref)
    b4 = b[:4]
    cola = info_nce(a @ w, b4, normalize=False, temperature=1.0, chunk_size=2)
    torch.testing.assert_close(cola, F.cross_entropy(bilinear_scores(a, b4, w), torch.arange(4)))
    with pytest.raises(ValueError, match="weight has shape"):
        bilinear_scores(a, b, torch.randn(2, 3))


@pytest.mark.parametrize("chunk", [None, 2])
def test_degenerate_inputs_give_zero_with_zero_grads(chunk, gen):
    z = torch.randn(4, 3, generator=gen, requires_grad=True)
    one_view = IdTargets(torch.arange(4), torch.arange(4), q_self_col=torch.arange(4))
    no_pos = torch.zeros(4, 4, dtype=torch.bool)
    all_masked = torch.zeros(4, 4, dtype=torch.bool)
    cases = [
        info_nce(z, z, positive_mask=one_view, chunk_size=chunk),  # each entity has one view
        info_nce(z, z, positive_mask=no_pos, chunk_size=chunk),
        info_nce(z, z, logits_mask=all_masked, chunk_size=chunk),
    ]
    for loss in cases:
        assert loss.item() == 0.0
        (grad,) = torch.autograd.grad(loss, z)
        assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings_are_never_hidden(chunk, bad, gen):
    q, k = torch.randn(4, 3, generator=gen), torch.randn(5, 3, generator=gen)
    k[4, 1] = bad
    pad = IdTargets(torch.arange(4), torch.arange(5), k_valid=torch.tensor([1, 1, 1, 1, 0]).bool())
    for recompute in (True, False):
        loss = info_nce(q, k, positive_mask=pad, chunk_size=chunk, recompute=recompute)
        assert torch.isnan(loss), "a non-finite key, even a padded one, must not give a finite loss"
    scores = torch.randn(3, 3, generator=gen)
    scores[1, 2] = bad
    assert torch.isnan(soft_target_cross_entropy(scores, torch.eye(3)))
    masked_out = ~torch.eye(3, dtype=torch.bool) | torch.eye(3, dtype=torch.bool)
    masked_out[1, 2] = False  # a masked-out -inf/NaN score of a dense matrix is ignored
    assert torch.isfinite(soft_target_cross_entropy(scores, torch.eye(3), mask=masked_out))


def test_bad_input_errors():
    q = torch.randn(3, 4)
    with pytest.raises(ValueError, match="targets have shape"):
        soft_target_cross_entropy(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match=">= 0"):
        soft_target_cross_entropy(torch.zeros(2, 2), -torch.eye(2))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(q, q, temperature=0.0)
    with pytest.raises(ValueError, match="inside the Targets"):
        soft_target_cross_entropy(
            (q, q), IdTargets(torch.arange(3), torch.arange(3)), mask=torch.ones(3, 3).bool()
        )
    with pytest.raises(ValueError, match="N == M"):
        info_nce(q, torch.randn(5, 4))
    with pytest.raises(ValueError, match="dim"):
        info_nce(q, torch.randn(3, 2))
    with pytest.raises(ValueError, match="positive_mask must be bool"):
        info_nce(q, q, positive_mask=torch.eye(3))
    with pytest.raises(ValueError, match="k_valid has length"):
        IdTargets(torch.arange(3), torch.arange(3), k_valid=torch.ones(2).bool())
    with pytest.raises(ValueError, match="k_group values"):
        IdTargets(
            torch.arange(2),
            torch.arange(2),
            q_group=torch.tensor([0, 0]),
            k_group=torch.tensor([0, 2]),
            group_weight=torch.ones(1, 2),
        )
    with pytest.raises(ValueError, match="invariant"):
        loev_positive_masks(torch.arange(2), {"invariant": torch.ones(2).bool()})
    with pytest.raises(ValueError, match="chunk_size"):
        info_nce(q, q, chunk_size=0)
