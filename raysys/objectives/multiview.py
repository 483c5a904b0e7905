"""Multi-view binary relevance (algorithms.md section 1): InfoNCE over pairs of view slots.

Slots are (modality, view) positions, S = M * V. For a slot pair (a, b) and direction a -> b,
the queries are this worker's entities' slot-a embeddings, the keys every pooled entity's
slot-b embedding (plus optional queue keys as extra negatives), and

    ℓ_i(a->b) = -Σ_{p∈P_i} (w_p / Σ_{P_i} w) log( exp(s_ip) / Σ_{j∈B_i} exp(s_ij) )

with P_i = pooled keys of the same entity id, w = 1 (a duplicate of i on another worker is a
positive, not a false negative); with `neighbours`, also the keys of the k other pooled
entities whose slot-b keys score highest against query i (no gradient through the choice),
w = `neighbours.weight`. B_i = keys present in slot b (+ queue keys, less those of the
query's entity and neighbours). Queries absent in a, or without a positive of their own
entity, do not count.
`L(a->b)` = mean over counting queries; the pair term `L_ab` = mean of the two directions that
have a counting query, and the pair exists if either does. Then

    binary = Σ_{pairs that exist} w_ab L_ab / Σ_{pairs that exist} w_ab

(0, still attached to the graph, when no pair exists). Pairs: `all_pairs` = every unordered
slot pair; `anchor` = the pairs with at least one view of the anchor modality. Scores come from
a `Scorer` (cosine / τ, or COLA's bilinear). No host sync; memory per direction O(B * M) dense
or O(chunk * M) chunked, ids O(B + M).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raysys.objectives.config import pair_key
from raysys.objectives.losses import soft_target_cross_entropy
from raysys.objectives.pool import ViewPool
from raysys.objectives.targets import NO_ID, IdTargets

# (query embeddings [N, d], key embeddings [M, d], reverse direction?) -> (q, k) with s = q kᵀ
Scorer = Callable[[torch.Tensor, torch.Tensor, bool], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class SlotPair:
    a: int
    b: int
    weight: float
    modality_pair: str  # e.g. "audio-image"
    cross_modal: bool = False  # the two slots hold different modalities


def slot_pairs(
    modalities: tuple[str, ...], views: int, mode: str, anchor: str,
    weight: Callable[[str, str], float],
) -> list[SlotPair]:  # fmt: skip
    """The weighted slot pairs of `mode` ("all_pairs" | "anchor"); weight-0 pairs are dropped."""
    if mode == "anchor" and anchor not in modalities:
        raise ValueError(
            f"objective.anchor_modality: {anchor!r} is not among the batch's modalities "
            f"{list(modalities)}"
        )
    mod = lambda s: modalities[s // views]
    pairs = []
    n = len(modalities) * views
    for a in range(n):
        for b in range(a + 1, n):
            if mode == "anchor" and anchor not in (mod(a), mod(b)):
                continue
            w = weight(mod(a), mod(b))
            if w > 0:
                pairs.append(SlotPair(a, b, w, pair_key(mod(a), mod(b)), mod(a) != mod(b)))
    return pairs


def cosine_scorer(temperature: torch.Tensor) -> Scorer:
    """`s_ij = cos(q_i, k_j) / τ` (τ folded into the normalised queries)."""
    return lambda q, k, _reverse: (F.normalize(q, dim=-1) / temperature, F.normalize(k, dim=-1))


@dataclass
class Negatives:
    """Extra keys appended to every direction's pool (e.g. a memory queue), never positives."""

    keys: torch.Tensor  # [Q, d]
    ids: torch.Tensor  # [Q] int64 entity ids (a queued key of the query's entity is dropped)


@dataclass(frozen=True)
class NeighbourPositives:
    """The k nearest other pooled entities of each query are positives too (NNCLR-like)."""

    k: int
    weight: float = 1.0


@torch.no_grad()
def nearest_other_ids(
    qs: torch.Tensor, q_ids: torch.Tensor, ks: torch.Tensor, k_ids: torch.Tensor,
    k_ok: torch.Tensor, k: int, chunk_size: int | None,
) -> torch.Tensor:  # fmt: skip
    """`[N, k]` ids of the k highest-scoring keys of another entity per query (`NO_ID` pads).

    A query without a valid key of its own entity gets none (it still does not count). Scores
    are `qs ksᵀ` without gradient, in row blocks of `chunk_size` (memory O(chunk * M)).
    """
    n, m = qs.shape[0], ks.shape[0]
    out = torch.full((n, k), NO_ID, dtype=torch.int64, device=qs.device)
    k_ids = k_ids.to(torch.int64)
    step = chunk_size or max(n, 1)
    for start in range(0, n, step):
        rows = slice(start, min(start + step, n))
        s = (qs[rows] @ ks.T).float()
        own = q_ids[rows, None].to(torch.int64) == k_ids[None, :]
        s = s.masked_fill(own | ~k_ok[None, :], float("-inf"))
        top, col = s.topk(min(k, m), dim=1)
        usable = torch.isfinite(top) & (own & k_ok[None, :]).any(1, keepdim=True)
        ids = torch.where(usable, k_ids[col], torch.full_like(col, NO_ID))
        out[rows, : ids.shape[1]] = ids
    return out


def direction_loss(
    q: torch.Tensor, q_ok: torch.Tensor, q_ids: torch.Tensor,
    k: torch.Tensor, k_ok: torch.Tensor, k_ids: torch.Tensor,
    scorer: Scorer, reverse: bool, extra: Negatives | None, chunk_size: int | None,
    recompute: bool, neighbours: NeighbourPositives | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """(mean loss over counting queries, whether any query counts, keys in the softmax)."""
    q_ids = torch.where(q_ok, q_ids, torch.full_like(q_ids, -1))  # -1 matches no entity id
    qs, ks = scorer(q, k, reverse)
    nbr_ids = None
    if neighbours is not None:
        nbr_ids = nearest_other_ids(qs, q_ids, ks, k_ids, k_ok, neighbours.k, chunk_size)
    negative_only = None
    if extra is not None and extra.keys.shape[0] > 0:
        _, kx = scorer(q[:0], extra.keys, reverse)
        ks = torch.cat([ks, kx])
        k_ids = torch.cat([k_ids, extra.ids.to(k_ids)])
        k_ok = torch.cat([k_ok, torch.ones_like(extra.ids, dtype=torch.bool)])
        negative_only = torch.zeros_like(k_ok)
        negative_only[k.shape[0] :] = True
    targets = IdTargets(
        q_ids, k_ids, k_valid=k_ok, k_negative_only=negative_only, q_neighbour_ids=nbr_ids,
        neighbour_weight=neighbours.weight if neighbours else 1.0,
    )  # fmt: skip
    loss = soft_target_cross_entropy(
        (qs, ks), targets, chunk_size=chunk_size, recompute=recompute
    )
    pooled_ids = torch.where(k_ok, k_ids, torch.full_like(k_ids, NO_ID))[: k.shape[0]]
    counts = (q_ok & torch.isin(q_ids, pooled_ids)).any()  # no boolean indexing: no host sync
    return loss, counts, k_ok.sum()


def multiview_binary(
    emb: torch.Tensor, present: torch.Tensor, entity_id: torch.Tensor, pool_emb: torch.Tensor,
    pool: ViewPool, pairs: list[SlotPair], scorer: Scorer, *, extra: Negatives | None = None,
    chunk_size: int | None = None, recompute: bool = True,
    cross: tuple[torch.Tensor, torch.Tensor] | None = None,
    neighbours: NeighbourPositives | None = None,
) -> dict[str, torch.Tensor]:  # fmt: skip
    """Weighted mean of the existing pairs' symmetric InfoNCE terms (see module docstring).

    `cross`: (queries, pool keys) of another head, shaped as `emb` and `pool_emb`, that scores
    the cross-modal pairs instead (without `extra`, whose keys live in the first head's space).

    Shapes: emb `[B, S, d]` (queries), present `[B, S]`, entity_id `[B]`, pool_emb `[M, S, d]`
    with `pool.present [M, S]`, `pool.entity_id [M]`. Returns `{"loss", "pairs", "keys",
    "<modality pair>"...}`: the term, the number of existing slot pairs, the mean softmax pool
    size, and each modality pair's mean term (detached; 0 when none of its pairs exists).
    """
    guard = emb.sum() * 0.0  # keeps a NaN in the queries visible even when nothing counts
    if cross is not None:
        guard = guard + cross[0].sum() * 0.0
    weighted, total_w = guard, guard.detach()
    per_mp: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
    keys, n_dirs = guard.detach(), 0
    for p in pairs:
        q_emb, k_emb, negatives = (*cross, None) if cross is not None and p.cross_modal else (
            emb, pool_emb, extra)
        terms, oks = [], []
        for a, b, reverse in ((p.a, p.b, False), (p.b, p.a, True)):
            loss, ok, n_keys = direction_loss(
                q_emb[:, a], present[:, a], entity_id, k_emb[:, b], pool.present[:, b],
                pool.entity_id, scorer, reverse, negatives, chunk_size, recompute, neighbours,
            )  # fmt: skip
            terms.append(loss)
            oks.append(ok.to(loss.dtype))
            keys, n_dirs = keys + n_keys, n_dirs + 1
        n_ok = oks[0] + oks[1]
        term = (terms[0] * oks[0] + terms[1] * oks[1]) / n_ok.clamp(min=1)
        exists = (n_ok > 0).to(term.dtype)
        weighted = weighted + p.weight * exists * term
        total_w = total_w + p.weight * exists
        per_mp.setdefault(p.modality_pair, []).append((term.detach(), exists))
    out = {
        "loss": weighted / total_w.clamp(min=1e-12),
        "pairs": sum((e for v in per_mp.values() for _, e in v), guard.detach()),
        "keys": keys / max(n_dirs, 1),
    }
    for name, items in per_mp.items():
        n = sum(e for _, e in items)
        out[name] = sum(t * e for t, e in items) / n.clamp(min=1)
    return out
