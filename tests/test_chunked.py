"""Chunked logits equal the dense loss (values and gradients) and never hold an N x M block."""

from __future__ import annotations

import pytest
import torch
from torch.profiler import ProfilerActivity, profile

from raysys.losses import (
    DenseTargets,
    IdTargets,
    chunked_soft_target_ce,
    info_nce,
    soft_target_cross_entropy,
)


def rich_targets(gen: torch.Generator, n: int, m: int) -> IdTargets:
    """Every IdTargets feature at once: padding, self columns, group weights, queue columns."""
    return IdTargets(
        torch.randint(0, 4, (n,), generator=gen),
        torch.randint(0, 4, (m,), generator=gen),
        k_valid=torch.rand(m, generator=gen) > 0.2,
        q_self_col=torch.where(torch.rand(n, generator=gen) > 0.5, torch.arange(n) % m, -1),
        q_group=torch.randint(0, 2, (n,), generator=gen),
        k_group=torch.randint(0, 3, (m,), generator=gen),
        group_weight=torch.tensor([[1.0, 0.5, 0.0], [2.0, 1.0, 1.0]]),
        k_negative_only=torch.arange(m) >= m - 3,
    )


def ref_id_targets(t: IdTargets) -> tuple[torch.Tensor, torch.Tensor]:
    """Loop reference of IdTargets' dense weights and mask."""
    n, m = t.shape
    weights, mask = torch.zeros(n, m), torch.ones(n, m, dtype=torch.bool)
    for i in range(n):
        for j in range(m):
            same = bool(t.q_ids[i] == t.k_ids[j])
            w = float(t.group_weight[t.q_group[i], t.k_group[j]]) if same else 0.0
            if bool(t.k_negative_only[j]):
                w = 0.0
            excluded = same and w == 0.0
            mask[i, j] = bool(t.k_valid[j]) and int(t.q_self_col[i]) != j and not excluded
            weights[i, j] = w if mask[i, j] else 0.0
    return weights, mask


def test_id_targets_dense_matches_loops():
    gen = torch.Generator().manual_seed(1)
    t = rich_targets(gen, 16, 20)
    weights, mask = t.dense()
    ref_w, ref_m = ref_id_targets(t)
    assert torch.equal(mask, ref_m)
    torch.testing.assert_close(weights, ref_w)
    # the random case exercises every kind of weight
    assert {0.0, 0.5, 1.0, 2.0} <= set(weights.unique().tolist())


def loss_and_grads(q, k, **kw):
    q, k = q.detach().clone().requires_grad_(), k.detach().clone().requires_grad_()
    loss = soft_target_cross_entropy((q, k), temperature=0.2, **kw)
    return (loss, *torch.autograd.grad(loss, (q, k)))


@pytest.mark.parametrize("chunk", [1, 4, 9, 50])
@pytest.mark.parametrize("recompute", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_chunked_equals_dense(chunk, recompute, dtype):
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(9, 5, generator=gen, dtype=dtype)
    k = torch.randn(11, 5, generator=gen, dtype=dtype)
    targets = rich_targets(gen, 9, 11)
    dense = loss_and_grads(q, k, targets=targets)
    chunked = loss_and_grads(q, k, targets=targets, chunk_size=chunk, recompute=recompute)
    tol = {"rtol": 1e-5, "atol": 1e-7} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0}
    for a, b in zip(chunked, dense, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, **tol)


def test_chunked_dense_targets_and_no_grad():
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(6, 4, generator=gen), torch.randn(8, 4, generator=gen)
    t = torch.rand(6, 8, generator=gen)
    mask = torch.rand(6, 8, generator=gen) > 0.4
    dense = soft_target_cross_entropy((q, k), t, mask=mask)
    for recompute in (True, False):
        with torch.no_grad():
            chunked = chunked_soft_target_ce(q, k, DenseTargets(t, mask), 4, recompute=recompute)
        torch.testing.assert_close(chunked, dense)


def test_bf16_inputs_close_to_fp32():
    gen = torch.Generator().manual_seed(4)
    q, k = torch.randn(32, 16, generator=gen), torch.randn(32, 16, generator=gen)
    ref = info_nce(q, k, temperature=0.1)
    qb, kb = q.bfloat16().requires_grad_(), k.bfloat16().requires_grad_()
    got = info_nce(qb, kb, temperature=0.1, chunk_size=8)
    got.backward()
    assert qb.grad.dtype == torch.bfloat16 and got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=2e-2, atol=0)


def largest_allocation(fn) -> int:
    """Largest memory any single profiled op allocated itself, in bytes."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max(e.self_cpu_memory_usage for e in prof.events())


def test_chunked_never_allocates_a_full_matrix():
    n, d, chunk = 512, 8, 32
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(n, d, generator=gen, requires_grad=True)
    k = torch.randn(n, d, generator=gen, requires_grad=True)
    full = n * n * 4

    def step(chunk_size):
        def run():
            info_nce(q, k, chunk_size=chunk_size).backward()

        return run

    assert largest_allocation(step(None)) >= full  # the probe sees a dense [N, M] matrix
    for recompute in (True, False):
        peak = largest_allocation(
            lambda r=recompute: info_nce(q, k, chunk_size=chunk, recompute=r).backward()
        )
        assert peak <= 2 * chunk * n * 4, f"an allocation of {peak} B exceeds a row block"
