"""Cross-worker gather of embeddings, with and without gradient (pure torch.distributed).

Without an initialised process group every function works as world size 1 (identity).
Per-rank row counts may differ: sizes are exchanged first and rows padded to the largest.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank, 0 without a process group."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes, 1 without a process group."""
    return dist.get_world_size() if is_distributed() else 1


def _gather_sizes(n: int, device: torch.device) -> list[int]:
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _gather_padded(x: Tensor, sizes: list[int]) -> Tensor:
    """All-gather `x [n_r, ...]` from every rank into `[sum n_r, ...]` in rank order."""
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded.contiguous())
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def all_gather_no_grad(x: Tensor) -> Tensor:
    """`[n_r, ...]` on each rank -> `[sum_r n_r, ...]`, rank order, detached (bool supported)."""
    x = x.detach()
    if world_size() == 1:
        return x
    sizes = _gather_sizes(x.shape[0], x.device)
    if x.dtype == torch.bool:  # gloo has no bool all_gather
        return _gather_padded(x.to(torch.uint8), sizes).bool()
    return _gather_padded(x, sizes)


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:  # type: ignore[override]
        sizes = _gather_sizes(x.shape[0], x.device)
        ctx.start = sum(sizes[: rank()])
        ctx.n = x.shape[0]
        return _gather_padded(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.start + ctx.n]


def all_gather_with_grad(x: Tensor) -> Tensor:
    """All-gather `x [n_r, d]` into `[sum_r n_r, d]` (rank order) with gradient to the owner.

    Backward: the incoming gradient is all-reduced with SUM and each rank keeps its own slice.

    Why SUM is the right scale: rank r computes a loss `L_r` from its queries against all keys;
    data parallelism optimises `L = (1/W) Σ_r L_r` and averages parameter gradients over the W
    ranks. The owner of key block `k_o` must therefore receive `Σ_r ∂L_r/∂k_o` (every rank's
    use of its keys); the later DDP average supplies the 1/W. Keeping only the local
    `∂L_o/∂k_o` would drop the other ranks' terms; averaging here instead of summing would
    divide by W twice — the known "gradient off by world size" pitfall.

    Every rank must run backward through the same gathers (the all-reduce is a collective).
    With no process group this is the identity.
    """
    if world_size() == 1:
        return x
    return _AllGatherWithGrad.apply(x)
