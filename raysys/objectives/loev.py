"""LOEV heads (Guinot et al., ICASSP 2025; algorithms.md section 4) over the flattened views.

Every present view of every modality is one row/column (N = B * S local, M * S pooled). Per
head h, multi-positive InfoNCE with cosine scores and temperature τ (paper: 0.1):

    ℓ_v = -(1/|P_h(v)|) Σ_{p∈P_h(v)} log( exp(s_vp) / Σ_{u present, u≠v} exp(s_vu) ),
    s_vu = cos(z_v, z_u) / τ

- invariant head: P(v) = the other present views of v's entity;
- head k: P_k(v) = the other present views of v's entity, with k applied to neither view
  (a view with k applied is positive of nothing; it stays a negative for every other view).
  Views of a modality that does not record k count as "k not applied".
Rows without a positive do not count (0 when none does). `loev = Σ_h w_h L_h / Σ_h w_h`.
Targets are compact ids (`loev_ids` + `IdTargets`): O(N + M) besides the score blocks.
"""

from __future__ import annotations

import torch

from raysys.objectives.config import LoevConfig
from raysys.objectives.losses import info_nce
from raysys.objectives.pool import ViewPool
from raysys.objectives.targets import IdTargets, loev_ids


def tracked_flags(pool: ViewPool, augmentations: list[str]) -> dict[str, torch.Tensor]:
    """`{k: bool [M * S]}` for each tracked augmentation; error if no modality records k."""
    missing = [k for k in augmentations if k not in pool.applied]
    if missing:
        raise ValueError(
            f"objective.loev.augmentations: {missing} not recorded in the batch "
            f"(recorded augmentations: {sorted(pool.applied)})"
        )
    return {k: pool.applied[k].reshape(-1).bool() for k in augmentations}


def head_ids(pool: ViewPool, augmentations: list[str]) -> dict[str, torch.Tensor]:
    """`{head: int64 [M * S]}`: equal ids = positives; absent views get unique negative ids."""
    m, s = pool.present.shape
    flat_ids = pool.entity_id.repeat_interleave(s)
    ids = loev_ids(flat_ids, tracked_flags(pool, augmentations))
    present = pool.present.reshape(-1)
    unique = -(1 + torch.arange(m * s, device=flat_ids.device, dtype=flat_ids.dtype))
    return {h: torch.where(present, v, unique) for h, v in ids.items()}


def loev_losses(
    local_emb: dict[str, torch.Tensor], pool_emb: dict[str, torch.Tensor], pool: ViewPool,
    cfg: LoevConfig, *, chunk_size: int | None = None, recompute: bool = True,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """`{head: L_h}` for the invariant head and every tracked augmentation, plus `"loss"`.

    Shapes: local_emb[h] `[B, S, d]` (this worker's rows `pool.offset .. offset+B` of the
    pool), pool_emb[h] `[M, S, d]`.
    """
    ids = head_ids(pool, cfg.augmentations)
    present = pool.present.reshape(-1)
    out: dict[str, torch.Tensor] = {}
    for head in cfg.head_names():
        if head not in local_emb:
            raise ValueError(
                f"objective.loev: head {head!r} is not an output of the model "
                f"(model.loev_heads must list it; outputs: {sorted(local_emb)})"
            )
        q = local_emb[head].reshape(-1, local_emb[head].shape[-1])
        k = pool_emb[head].reshape(-1, q.shape[-1])
        rows = torch.arange(q.shape[0], device=q.device) + pool.offset * local_emb[head].shape[1]
        targets = IdTargets(ids[head][rows], ids[head], k_valid=present, q_self_col=rows)
        out[head] = info_nce(
            q, k, positive_mask=targets, temperature=cfg.temperature, chunk_size=chunk_size,
            recompute=recompute,
        )  # fmt: skip
    weights = {h: cfg.weight(h) for h in out}
    total = sum(weights[h] * out[h] for h in out) / sum(weights.values())
    return {"loss": total, **out}
