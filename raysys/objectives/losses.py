"""Contrastive loss primitives, all built on one soft-target cross-entropy.

    L = mean_{i ∈ R} [ -Σ_j p_ij · log_softmax_{j ∈ m_i}(s_ij / τ) ],   p_ij = t_ij / Σ_j t_ij

over the columns `m_i` of row i's mask; R = rows whose targets sum > 0 on their mask.
- InfoNCE (binary, multi-positive, supervised-contrastive, LOEV heads): t = a positive mask.
- ListNet top-1 (graded relevance): t = softmax(relevance / τ_r).
- COLA: bilinear scores `a W bᵀ`, t = the diagonal, τ = 1.

Conventions shared by every loss here:
- Rows without a positive don't count. If no row counts, the loss is 0 — still attached to the
  graph, so backward runs and gives zero gradients.
- Non-finite inputs are never hidden: a NaN/inf anywhere in q or k (or in a masked-in score)
  makes the loss NaN.
- `chunk_size` (rows per block) bounds memory to O(chunk_size * M); it applies when scores come
  as embeddings `(q, k)`. A materialised `[N, M]` scores tensor is computed densely.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from raysys.objectives.chunked import chunked_soft_target_ce
from raysys.objectives.targets import DenseTargets, IdTargets, Targets

Scores = Tensor | tuple[Tensor, Tensor]


def _check_temperature(name: str, value: float | Tensor) -> None:
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {list(value.shape)}")
        return
    if not value > 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def _check_embeddings(q: Tensor, k: Tensor) -> None:
    if not isinstance(q, Tensor) or not isinstance(k, Tensor) or q.dim() != 2 or k.dim() != 2:
        raise ValueError("q and k must be 2-D tensors [N, d] and [M, d]")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"q has dim {q.shape[1]} but k has dim {k.shape[1]}")


def _as_targets(targets: Tensor | Targets, mask: Tensor | None) -> Targets:
    if isinstance(targets, Targets):
        if mask is not None:
            raise ValueError("pass the mask inside the Targets object, not as mask=")
        return targets
    return DenseTargets(targets, mask)


def _nonfinite_guard(*tensors: Tensor) -> Tensor:
    """0, or NaN when any tensor holds a NaN/inf (no gradient, no host sync)."""
    finite = torch.stack([torch.isfinite(t).all() for t in tensors]).all()
    zero = torch.zeros((), device=tensors[0].device)
    return torch.where(finite, zero, torch.full_like(zero, float("nan")))


def _dense_soft_ce(scores: Tensor, targets: Targets) -> Tensor:
    """Plain autograd soft-target CE of a materialised `[N, M]` score matrix (memory O(N M))."""
    n, m = targets.shape
    acc = torch.promote_types(scores.dtype, torch.float32)
    weights, mask = targets.dense(acc)
    s = scores.to(acc)
    tsum = weights.sum(1)
    valid = tsum > 0
    masked_in_bad = (~torch.isfinite(s) & mask).any()
    # Rows that don't count get zero scores and an all-True mask so their logsumexp stays
    # finite (a -inf row would turn its zero gradient into NaN).
    s = s.masked_fill(~valid[:, None], 0.0)
    mask = mask | ~valid[:, None]
    weighted = (weights * s.masked_fill(~mask, 0.0)).sum(1)
    lse = torch.logsumexp(s.masked_fill(~mask, float("-inf")), 1)
    row = torch.where(valid, lse - weighted / tsum.clamp_min(1e-30), torch.zeros_like(lse))
    loss = row.sum() / valid.sum().clamp_min(1)
    return torch.where(masked_in_bad, torch.full_like(loss, float("nan")), loss)


def soft_target_cross_entropy(
    scores: Scores,
    targets: Tensor | Targets,
    *,
    temperature: float | Tensor = 1.0,
    mask: Tensor | None = None,
    chunk_size: int | None = None,
    recompute: bool = True,
) -> Tensor:
    """Mean over rows with targets of `-Σ_j (t_ij / Σ_j t_ij) log_softmax_j(s_ij / τ)`.

    Args:
        scores: `[N, M]` scores, or a pair `(q [N, d], k [M, d])` meaning `s = q kᵀ` (the full
            matrix is then never built when `chunk_size` is set).
        targets: `[N, M]` >= 0 (bool allowed) or a `Targets` object (e.g. `IdTargets`).
        temperature: τ > 0 (a float or a scalar tensor, e.g. a learnable one).
        mask: `[N, M]` bool, columns that take part in row i's softmax (default all). With a
            `Targets` object the mask lives inside it.
        chunk_size: rows per block for the `(q, k)` form (None = dense). Memory O(chunk_size·M).
        recompute: chunked backward recomputes score blocks (True) or the forward precomputes
            the gradients (False, fewer matmuls; see `raysys.objectives.chunked`).

    Returns: a scalar, fp32 (fp64 for fp64 inputs); 0 when no row has a target; NaN on
        non-finite inputs.
    """
    _check_temperature("temperature", temperature)
    tgt = _as_targets(targets, mask)
    if isinstance(scores, tuple):
        if len(scores) != 2:
            raise ValueError(f"scores as a tuple must be (q, k), got {len(scores)} items")
        q, k = scores
        _check_embeddings(q, k)
        _check_shape(tgt, (q.shape[0], k.shape[0]))
        q = q / temperature
        guard = _nonfinite_guard(q, k)
        if chunk_size is not None:
            return chunked_soft_target_ce(q, k, tgt, chunk_size, recompute=recompute) + guard
        return _dense_soft_ce(q @ k.T, tgt) + guard
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be [N, M] or a pair (q, k), got {_describe(scores)}")
    _check_shape(tgt, tuple(scores.shape))
    return _dense_soft_ce(scores / temperature, tgt)


def _check_shape(targets: Targets, expected: tuple[int, ...]) -> None:
    if tuple(targets.shape) != tuple(expected):
        raise ValueError(f"targets have shape {list(targets.shape)}, scores {list(expected)}")


def _describe(x: object) -> str:
    return f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def info_nce(
    q: Tensor,
    k: Tensor,
    *,
    positive_mask: Tensor | Targets | None = None,
    logits_mask: Tensor | None = None,
    temperature: float | Tensor = 0.07,
    normalize: bool = True,
    chunk_size: int | None = None,
    recompute: bool = True,
) -> Tensor:
    """Multi-positive InfoNCE: `ℓ_i = -(1/|P_i|) Σ_{p∈P_i} log softmax_{j∈B_i}(sim(q_i, k_j)/τ)_p`.

    Args:
        q, k: `[N, d]`, `[M, d]` embeddings; `sim` is cosine when `normalize`, else the dot product.
        positive_mask: `[N, M]` bool, or a `Targets` object (`IdTargets` for large pools). Default
            the diagonal (requires N == M), expressed compactly as ids.
        logits_mask: `[N, M]` bool, the pool `B_i` of each row (e.g. to drop self-pairs).
        temperature, chunk_size, recompute: as in `soft_target_cross_entropy`.

    Rows without positives don't count (loss 0 if none does). Returns a scalar tensor.
    """
    _check_embeddings(q, k)
    if positive_mask is None:
        if q.shape[0] != k.shape[0]:
            raise ValueError(
                f"default diagonal positives need N == M, got {q.shape[0]} vs {k.shape[0]}"
            )
        index = torch.arange(q.shape[0], device=q.device)
        positive_mask = IdTargets(index, index)
        if logits_mask is not None:
            positive_mask = DenseTargets(*positive_mask.dense())
    if isinstance(positive_mask, Tensor):
        if positive_mask.dtype != torch.bool:
            raise ValueError(f"positive_mask must be bool, got {positive_mask.dtype}")
        positive_mask = DenseTargets(positive_mask, logits_mask)
    elif logits_mask is not None:
        positive_mask = _with_dense_mask(positive_mask, logits_mask)
    if normalize:
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
    return soft_target_cross_entropy(
        (q, k), positive_mask, temperature=temperature, chunk_size=chunk_size, recompute=recompute
    )


def _with_dense_mask(targets: Targets, logits_mask: Tensor) -> DenseTargets:
    weights, mask = targets.dense()
    if logits_mask.shape != mask.shape:
        raise ValueError(
            f"logits_mask has shape {list(logits_mask.shape)}, expected {list(mask.shape)}"
        )
    return DenseTargets(weights, mask & logits_mask)


def listnet(
    scores: Tensor,
    relevance: Tensor,
    *,
    temperature: float | Tensor = 1.0,
    target_temperature: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """ListNet top-1: `-mean_i Σ_j softmax(r_i/τ_r)_j · log_softmax(s_i/τ)_j` over valid j.

    Args:
        scores: `[N, C]` scores of each query's candidates.
        relevance: `[N, C]` graded relevance in [0, 1] (a 0-100 rating / 100).
        mask: `[N, C]` bool, False = padded candidate. Rows without a valid candidate don't count.
    """
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        raise ValueError(f"scores must be [N, C], got {_describe(scores)}")
    if relevance.shape != scores.shape:
        raise ValueError(
            f"relevance has shape {list(relevance.shape)}, scores {list(scores.shape)}"
        )
    _check_temperature("target_temperature", target_temperature)
    valid = torch.ones_like(scores, dtype=torch.bool) if mask is None else mask
    if valid.shape != scores.shape or valid.dtype != torch.bool:
        raise ValueError(
            f"mask must be bool {list(scores.shape)}, got {valid.dtype} {list(valid.shape)}"
        )
    rel = relevance.detach().float()
    if not torch.isfinite(rel[valid]).all() or (rel[valid] < 0).any() or (rel[valid] > 1).any():
        raise ValueError("relevance must be finite and in [0, 1] on valid candidates (rating/100)")
    logits = (rel / target_temperature).masked_fill(~valid, float("-inf"))
    has_any = valid.any(1, keepdim=True)
    target = torch.softmax(logits.masked_fill(~has_any, 0.0), 1) * has_any
    return soft_target_cross_entropy(scores, target, temperature=temperature, mask=valid)


def bilinear_scores(a: Tensor, b: Tensor, weight: Tensor) -> Tensor:
    """COLA scores `S = a W bᵀ`: a `[N, d]`, b `[M, e]`, weight `[d, e]` -> `[N, M]`.

    For a large pool pass `(a @ weight, b)` as the scores pair of `soft_target_cross_entropy`
    (or `info_nce(a @ weight, b, normalize=False, temperature=1.0, chunk_size=...)`).
    """
    if a.dim() != 2 or b.dim() != 2 or weight.dim() != 2:
        raise ValueError("bilinear_scores needs a [N, d], b [M, e] and weight [d, e]")
    if weight.shape != (a.shape[1], b.shape[1]):
        raise ValueError(
            f"weight has shape {list(weight.shape)}, expected [{a.shape[1]}, {b.shape[1]}]"
        )
    return (a @ weight) @ b.T
