"""Retrieval metrics on a score matrix (algorithms.md section 2): R@k, mAP@k, nDCG@k.

Inputs: `scores [Q, N]` (higher = more relevant), `positives [Q, N]` bool (binary relevance)
or `relevance [Q, N]` >= 0 (graded gains), and an optional `mask [Q, N]` (True = a real
candidate; padding is never ranked above a real candidate and never counts).

Ties in R@k and mAP@k are broken against the positives (pessimistic), so a constant score
function earns no credit from the candidates' order. nDCG averages the gains of tied
candidates, exactly as `sklearn.metrics.ndcg_score` (default `ignore_ties=False`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from raysys.eval._checks import (
    ArrayLike,
    as_embeddings,
    l2_normalize,
    require_positive_int,
    same_dim,
    to_numpy,
)


def cosine_scores(query_emb: ArrayLike, gallery_emb: ArrayLike) -> np.ndarray:
    """`S[i, j] = cos(q_i, g_j)`, shape `[Q, N]` (memory O(Q * N))."""
    q = l2_normalize(as_embeddings(query_emb, "query_emb"))
    g = l2_normalize(as_embeddings(gallery_emb, "gallery_emb"))
    same_dim(q, g, "query_emb", "gallery_emb")
    return q @ g.T


def _inputs(
    scores: ArrayLike, target: ArrayLike, mask: ArrayLike | None, target_name: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores with padding at -inf, target, mask) as `[Q, N]` arrays, validated."""
    s = to_numpy(scores).astype(np.float64)
    t = to_numpy(target)
    if s.ndim != 2 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 2-D array [Q, N], got shape {s.shape}")
    if t.shape != s.shape:
        raise ValueError(f"{target_name} has shape {t.shape} but scores has shape {s.shape}")
    m = np.ones(s.shape, bool) if mask is None else to_numpy(mask).astype(bool)
    if m.shape != s.shape:
        raise ValueError(f"mask has shape {m.shape} but scores has shape {s.shape}")
    bad = m & ~np.isfinite(s)
    if bad.any():
        row = int(np.flatnonzero(bad.any(axis=1))[0])
        raise ValueError(f"scores has {int(bad.sum())} non-finite values, first in row {row}")
    return np.where(m, s, -np.inf), t, m


def _ranked_hits(
    scores: ArrayLike, positives: ArrayLike, mask: ArrayLike | None
) -> tuple[np.ndarray, np.ndarray]:
    """(hits `[Q, N]` in rank order, positives per query `[Q]`), queries without positives
    dropped. Raises when no query has a positive."""
    s, p, m = _inputs(scores, positives, mask, "positives")
    if p.dtype != bool and not np.isin(p, (0, 1)).all():
        raise ValueError("positives must be boolean (or 0/1)")
    p = p.astype(bool) & m
    n_pos = p.sum(axis=1)
    keep = n_pos > 0
    if not keep.any():
        raise ValueError("no query has a positive candidate; the metric is undefined")
    s, p = s[keep], p[keep]
    order = np.lexsort((p, -s), axis=1)  # by score descending, ties: negatives first
    return np.take_along_axis(p, order, axis=1), n_pos[keep]


def recall_at_k(
    scores: ArrayLike,
    positives: ArrayLike,
    k: int,
    *,
    mask: ArrayLike | None = None,
    mode: Literal["hit", "fraction"] = "hit",
) -> float:
    """Recall@k averaged over queries that have at least one positive.

    `mode="hit"` (the R@1/5/10 of cross-modal retrieval): 1 if any positive is in the top k.
    `mode="fraction"`: (#positives in the top k) / #positives.
    Queries without a positive are left out of the mean (ValueError if all are).
    """
    k = require_positive_int(k, "k")
    if mode not in ("hit", "fraction"):
        raise ValueError(f"mode must be 'hit' or 'fraction', got {mode!r}")
    hits, n_pos = _ranked_hits(scores, positives, mask)
    found = hits[:, :k].sum(axis=1)
    per_query = found > 0 if mode == "hit" else found / n_pos
    return float(np.mean(per_query))


def map_at_k(
    scores: ArrayLike, positives: ArrayLike, k: int = 10, *, mask: ArrayLike | None = None
) -> float:
    """Mean average precision at k.

    `AP@k = (1 / min(k, n_pos)) * sum_{r=1..k} P@r * rel_r`, with `P@r` the fraction of
    positives in the top r and `rel_r` = 1 if rank r holds a positive. The denominator
    `min(k, n_pos)` makes a perfect ranking score 1 even when a query has more than k
    positives. Queries without a positive are left out of the mean. With `k >= N` this is
    `sklearn.metrics.label_ranking_average_precision_score` (barring ties).
    """
    k = require_positive_int(k, "k")
    hits, n_pos = _ranked_hits(scores, positives, mask)
    top = hits[:, :k].astype(np.float64)
    precision = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    ap = (precision * top).sum(axis=1) / np.minimum(k, n_pos)
    return float(np.mean(ap))


def _discounts(n: int, k: int) -> np.ndarray:
    """`1 / log2(r + 1)` for ranks r = 1..n, zero beyond rank k."""
    d = 1.0 / np.log2(np.arange(2, n + 2))
    d[k:] = 0.0
    return d


def _tie_averaged_dcg(s: np.ndarray, g: np.ndarray, k: int) -> np.ndarray:
    """DCG@k per row where each group of tied scores shares the mean gain of its members
    (sklearn's `_tie_averaged_dcg`, vectorised over rows). Shapes `[Q, N]` -> `[Q]`."""
    q, n = s.shape
    order = np.argsort(-s, axis=1, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=1)
    g_sorted = np.take_along_axis(g, order, axis=1)
    cols = np.arange(n)[None, :]
    new_group = np.ones((q, n), bool)
    new_group[:, 1:] = s_sorted[:, 1:] != s_sorted[:, :-1]
    start = np.maximum.accumulate(np.where(new_group, cols, 0), axis=1)
    ends_here = np.ones((q, n), bool)
    ends_here[:, :-1] = new_group[:, 1:]
    end = np.minimum.accumulate(np.where(ends_here, cols, n - 1)[:, ::-1], axis=1)[:, ::-1]
    csum = np.concatenate([np.zeros((q, 1)), np.cumsum(g_sorted, axis=1)], axis=1)
    rows = np.arange(q)[:, None]
    group_mean = (csum[rows, end + 1] - csum[rows, start]) / (end - start + 1)
    return (group_mean * _discounts(n, k)[None, :]).sum(axis=1)


def ndcg_at_k(
    scores: ArrayLike, relevance: ArrayLike, k: int = 10, *, mask: ArrayLike | None = None
) -> float:
    """Normalised discounted cumulative gain at k with linear (graded) gains.

    `DCG@k = sum_{r=1..k} rel_(r) / log2(r + 1)` in the order of `scores`,
    `nDCG@k = DCG@k / IDCG@k` with IDCG the DCG of the ideal order, averaged over queries.
    Conventions of `sklearn.metrics.ndcg_score`: tied scores share their mean gain, and a
    query whose relevances are all zero scores 0 and still counts in the mean.
    Relevance must be >= 0 (e.g. the 0-100 ratings, or 0/1).
    """
    k = require_positive_int(k, "k")
    s, r, m = _inputs(scores, relevance, mask, "relevance")
    r = r.astype(np.float64)
    if np.any(~np.isfinite(r[m])) or np.any(r[m] < 0):
        raise ValueError("relevance must be finite and >= 0")
    r = np.where(m, r, 0.0)
    ideal = (-np.sort(-r, axis=1) * _discounts(r.shape[1], k)[None, :]).sum(axis=1)
    dcg = _tie_averaged_dcg(s, r, k)
    out = np.zeros_like(dcg)
    np.divide(dcg, ideal, out=out, where=ideal > 0)
    return float(np.mean(out))


def retrieval_report(
    scores: ArrayLike,
    positives: ArrayLike | None = None,
    relevance: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    *,
    ks: tuple[int, ...] | list[int] = (1, 5, 10),
    map_k: int = 10,
) -> dict[str, float]:
    """`R@k` for each k and `mAP@{map_k}` (binary positives), `nDCG@{map_k}` (graded)."""
    if positives is None and relevance is None:
        raise ValueError("retrieval_report needs positives, relevance, or both")
    out: dict[str, float] = {}
    if positives is not None:
        out.update({f"R@{k}": recall_at_k(scores, positives, k, mask=mask) for k in ks})
        out[f"mAP@{map_k}"] = map_at_k(scores, positives, map_k, mask=mask)
    if relevance is not None:
        out[f"nDCG@{map_k}"] = ndcg_at_k(scores, relevance, map_k, mask=mask)
    return out
