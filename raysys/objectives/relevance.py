"""Continuous (graded) relevance: ListNet top-1 over each query's candidate list (section 2).

Entity embedding: `e = normalize(mean_{s present} normalize(x_s))` over the entity's present
views (invariant head). For query i with candidates c_1..c_K (entity ids from the archive's
relevance table) and ratings r_ij in [0, 100]:

    P_i(j) = softmax_j((r_ij / 100) / τ_r),   Q_i(j) = softmax_j(cos(e_i, e_{c_j}) / τ)
    L_i = -Σ_j P_i(j) log Q_i(j),             continuous = mean over valid lists

Candidate j is valid when it is a real entry (`relevance_mask`), its entity is in the pool
(found by id among the pooled entities) and has a present view. A list counts when the query
has a present view and at least 2 valid candidates (a 1-candidate list carries no ranking
signal); with no valid list the term is 0 (attached). Lookup O((B K + M) log M); scores O(B K d).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raysys.objectives.losses import listnet


def entity_embeddings(
    emb: torch.Tensor, present: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """`[B, S, d]`, `[B, S]` -> (normalised mean of the present views `[B, d]`, any view `[B]`)."""
    unit = F.normalize(emb, dim=-1)
    unit = torch.where(present.unsqueeze(-1), unit, torch.zeros_like(unit))
    return F.normalize(unit.sum(1), dim=-1), present.any(1)


def lookup(pool_ids: torch.Tensor, wanted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row of each `wanted` id in `pool_ids [M]` (any one if duplicated) and whether found."""
    if pool_ids.numel() == 0:
        return torch.zeros_like(wanted), torch.zeros_like(wanted, dtype=torch.bool)
    sorted_ids, order = torch.sort(pool_ids)
    pos = torch.searchsorted(sorted_ids, wanted).clamp(max=pool_ids.numel() - 1)
    return order[pos], sorted_ids[pos] == wanted


def check_lists(cand_ids: torch.Tensor, ratings: torch.Tensor, mask: torch.Tensor, b: int) -> None:
    for name, t in (("relevance_entity_id", cand_ids), ("relevance", ratings),
                    ("relevance_mask", mask)):  # fmt: skip
        if t.dim() != 2 or t.shape[0] != b or t.shape != cand_ids.shape:
            raise ValueError(
                f"batch.{name}: expected [B={b}, K] like relevance_entity_id, got {list(t.shape)}"
            )
    if mask.dtype != torch.bool:
        raise ValueError(f"batch.relevance_mask must be bool, got {mask.dtype}")


def continuous_relevance(
    q_emb: torch.Tensor, q_present: torch.Tensor, pool_emb: torch.Tensor,
    pool_present: torch.Tensor, pool_ids: torch.Tensor, cand_ids: torch.Tensor,
    ratings: torch.Tensor, cand_mask: torch.Tensor, *, temperature: torch.Tensor | float,
    target_temperature: float,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """ListNet over candidate lists (module docstring). Returns `{"loss", "lists"}`.

    Shapes: q_emb `[B, S, d]`, q_present `[B, S]`, pool_emb `[M, S, d]`, pool_present
    `[M, S]`, pool_ids `[M]`, cand_ids / ratings / cand_mask `[B, K]` (ratings 0-100).
    """
    check_lists(cand_ids, ratings, cand_mask, q_emb.shape[0])
    q, q_has = entity_embeddings(q_emb, q_present)
    keys, key_has = entity_embeddings(pool_emb, pool_present)
    row, found = lookup(pool_ids, cand_ids)
    valid = cand_mask & found & key_has[row]
    lists = q_has & (valid.sum(1) >= 2)
    valid = valid & lists[:, None]
    scores = torch.einsum("bd,bkd->bk", q, keys[row])
    rel = torch.where(valid, ratings.float() / 100.0, torch.zeros_like(ratings, dtype=torch.float))
    loss = listnet(scores, rel, temperature=temperature, target_temperature=target_temperature,
                   mask=valid)  # fmt: skip
    guard = q_emb.sum() * 0.0  # a NaN in any query embedding stays visible
    return {"loss": loss + guard, "lists": lists.sum().to(loss.dtype).detach()}
