"""Soft-target cross-entropy of `q @ k.T` computed in row blocks: no `[N, M]` matrix is ever held.

For scores `s = q kᵀ` (temperature already folded into q), targets `w` and softmax mask `m`
(a `Targets` object, generated per block):

    L = (1/|R|) Σ_{i∈R} [ lse_i - Σ_j w_ij s_ij / Σ_j w_ij ],   lse_i = log Σ_{j: m_ij} exp s_ij
    ∂L/∂s_ij = (1/|R|) [ m_ij exp(s_ij - lse_i) - w_ij / Σ_j w_ij ]     (i ∈ R, else 0)

with R the rows whose targets sum > 0 (L = 0 when R is empty). Rows are processed `chunk_size`
at a time against all M keys, so the extra memory is O(chunk_size * M) for the block plus
O((N + M) d) for the gradients — linear in the pool size, never quadratic.

Two ways to get the gradient (`recompute`):
- True (Inf-CL style): the forward keeps only `lse` and the row target sums (O(N)); the backward
  recomputes every score block. 4 block matmuls per step instead of the naive 3.
- False (fused): the forward, when a gradient is needed, also computes `∂L/∂q` and `∂L/∂k`
  (the loss is a scalar, so the backward only scales them). 3 matmuls, like the naive loss,
  but it keeps `dq`, `dk` (O((N + M) d)) from forward to backward. Used when speed matters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from raysys.objectives.targets import Targets


def _acc_dtype(x: Tensor) -> torch.dtype:
    """Softmax/accumulation dtype: at least fp32 (bf16 inputs), fp64 stays fp64."""
    return torch.promote_types(x.dtype, torch.float32)


def _block_scores(q_rows: Tensor, k: Tensor) -> Tensor:
    """Scores of one row block in >= fp32 (the matmul runs in the inputs' dtype, e.g. bf16)."""
    return (q_rows @ k.T).to(_acc_dtype(q_rows))


def _block_forward(
    s: Tensor, weights: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, Tensor]:
    """Row stats of one block: (lse, target-weighted score, target sum), each `[r]`.

    Masks `s` in place (masked entries -> -inf); rows with an empty mask get lse = -inf.
    """
    weighted = (weights * s).sum(1)
    if mask is not None:
        s.masked_fill_(~mask, float("-inf"))
    return torch.logsumexp(s, 1), weighted, weights.sum(1)


def _block_grad_scores(
    s_masked: Tensor, lse: Tensor, weights: Tensor, tsum: Tensor, valid: Tensor
) -> Tensor:
    """`∂(Σ_{i∈R} loss_i)/∂s` of one block, in place over `s_masked`: softmax - target."""
    # Rows that don't count still need a finite shift: an empty mask gives lse = -inf.
    safe_lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))
    grad = s_masked.sub_(safe_lse[:, None]).exp_()
    inv_tsum = 1.0 / tsum.clamp_min(torch.finfo(tsum.dtype).tiny)
    grad.addcmul_(weights, inv_tsum[:, None], value=-1.0)
    return grad.mul_(valid.to(grad.dtype)[:, None])


class _ChunkedSoftCE(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, q: Tensor, k: Tensor, targets: Targets, chunk: int, recompute: bool
    ) -> Tensor:
        n, m = q.shape[0], k.shape[0]
        need_grad = any(ctx.needs_input_grad[:2])
        fuse = need_grad and not recompute
        acc = _acc_dtype(q)
        lse, tsum = q.new_empty(n, dtype=acc), q.new_empty(n, dtype=acc)
        row_loss = q.new_zeros(n, dtype=acc)
        dq = torch.zeros_like(q, dtype=acc) if fuse else None
        dk = torch.zeros_like(k, dtype=acc) if fuse else None
        for r0 in range(0, n, chunk):
            rows = slice(r0, min(r0 + chunk, n))
            s = _block_scores(q[rows], k)
            w, mask = targets.block(rows, slice(0, m), acc)
            lse_r, weighted, tsum_r = _block_forward(s, w, mask)
            valid = tsum_r > 0
            lse[rows], tsum[rows] = lse_r, tsum_r
            row_loss[rows] = torch.where(valid, lse_r - weighted / tsum_r.clamp_min(1e-30), 0.0)
            if fuse:
                grad = _block_grad_scores(s, lse_r, w, tsum_r, valid)
                dq[rows] = grad.to(k.dtype) @ k
                dk += (grad.T.to(q.dtype) @ q[rows]).to(acc)
            del s, w, mask
        n_valid = (tsum > 0).sum().clamp_min(1).to(acc)
        ctx.chunk, ctx.targets, ctx.fused = chunk, targets, fuse
        ctx.q_dtype, ctx.k_dtype = q.dtype, k.dtype
        if fuse:
            ctx.save_for_backward(dq / n_valid, dk / n_valid)
        elif need_grad:
            ctx.save_for_backward(q, k, lse, tsum, n_valid)
        return row_loss.sum() / n_valid

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        if ctx.fused:
            dq, dk = ctx.saved_tensors
        else:
            dq, dk = _recompute_grads(ctx, *ctx.saved_tensors)
        q_grad = (dq * grad_out).to(ctx.q_dtype) if ctx.needs_input_grad[0] else None
        k_grad = (dk * grad_out).to(ctx.k_dtype) if ctx.needs_input_grad[1] else None
        return q_grad, k_grad, None, None, None


def _recompute_grads(
    ctx: Any, q: Tensor, k: Tensor, lse: Tensor, tsum: Tensor, n_valid: Tensor
) -> tuple[Tensor, Tensor]:
    """Backward of the recompute mode: rebuild every score block from q, k and the saved lse."""
    n, m = q.shape[0], k.shape[0]
    acc = _acc_dtype(q)
    dq = torch.zeros_like(q, dtype=acc)
    dk = torch.zeros_like(k, dtype=acc)
    for r0 in range(0, n, ctx.chunk):
        rows = slice(r0, min(r0 + ctx.chunk, n))
        s = _block_scores(q[rows], k)
        w, mask = ctx.targets.block(rows, slice(0, m), acc)
        if mask is not None:
            s.masked_fill_(~mask, float("-inf"))
        grad = _block_grad_scores(s, lse[rows], w, tsum[rows], tsum[rows] > 0)
        dq[rows] = grad.to(k.dtype) @ k
        dk += (grad.T.to(q.dtype) @ q[rows]).to(acc)
        del s, w, mask, grad
    return dq / n_valid, dk / n_valid


def chunked_soft_target_ce(
    q: Tensor, k: Tensor, targets: Targets, chunk_size: int, *, recompute: bool = True
) -> Tensor:
    """Mean soft-target cross-entropy of `q @ k.T` without materialising it (see module doc).

    Shapes: q `[N, d]`, k `[M, d]`, `targets.shape == (N, M)`. Returns a scalar (>= fp32).
    Peak extra memory ~ `3 * chunk_size * M * 4` bytes + O((N + M) d).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return _ChunkedSoftCE.apply(q, k, targets, chunk_size, recompute)
