"""k-nearest-neighbour metrics: kNN classification accuracy and neighbour agreement.

Neighbours are found by Euclidean distance, on L2-normalised embeddings by default (then the
order equals cosine similarity order). Distances are computed in query blocks, so memory is
O(32 MB + N_gallery), never O(N_query * N_gallery).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from raysys.eval._checks import (
    ArrayLike,
    as_embeddings,
    as_labels,
    block_rows,
    encode,
    l2_normalize,
    require_positive_int,
    require_seen,
    same_dim,
    to_numpy,
)


def top_k_neighbours(
    query: np.ndarray, gallery: np.ndarray, k: int, *, exclude_self: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Indices `[M, k]` and Euclidean distances `[M, k]` of each query's k nearest gallery rows,
    nearest first (ties: lower gallery index first).

    `exclude_self=True` requires `query is gallery` and skips each row's own index
    (leave-one-out). Memory: O(N * D) plus ~32 MB of distance blocks.
    """
    n = gallery.shape[0]
    available = n - 1 if exclude_self else n
    if k > available:
        raise ValueError(f"k = {k} exceeds the {available} available neighbours")
    sq_g = (gallery**2).sum(axis=1)
    idx = np.empty((query.shape[0], k), dtype=np.int64)
    dist = np.empty((query.shape[0], k))
    block = block_rows(n)
    for s in range(0, query.shape[0], block):
        q = query[s : s + block]
        d2 = (q**2).sum(axis=1)[:, None] + sq_g[None, :] - 2.0 * q @ gallery.T
        d2 = np.maximum(d2, 0.0)
        if exclude_self:
            rows = np.arange(q.shape[0])
            d2[rows, rows + s] = np.inf
        order = np.argsort(d2, axis=1, kind="stable")[:, :k]
        idx[s : s + block] = order
        dist[s : s + block] = np.sqrt(np.take_along_axis(d2, order, axis=1))
    return idx, dist


def _vote(
    neigh_class: np.ndarray, dist: np.ndarray, n_classes: int, weights: str
) -> np.ndarray:
    """Predicted class index per row; vote ties go to the lower class index (as scikit-learn)."""
    if weights == "uniform":
        w = np.ones_like(dist)
    else:
        with np.errstate(divide="ignore"):
            w = 1.0 / dist
        exact = np.isinf(w)
        has_exact = exact.any(axis=1)
        w[has_exact] = exact[has_exact].astype(np.float64)  # zero distance: only those count
    pred = np.empty(neigh_class.shape[0], dtype=np.int64)
    block = block_rows(n_classes)
    for s in range(0, neigh_class.shape[0], block):
        c, wb = neigh_class[s : s + block], w[s : s + block]
        votes = np.zeros((c.shape[0], n_classes))
        np.add.at(votes, (np.arange(c.shape[0])[:, None], c), wb)
        pred[s : s + block] = np.argmax(votes, axis=1)
    return pred


def knn_accuracy(
    train_emb: ArrayLike,
    train_labels: ArrayLike,
    test_emb: ArrayLike,
    test_labels: ArrayLike,
    *,
    k: int = 20,
    weights: Literal["uniform", "distance"] = "uniform",
    normalize: bool = True,
) -> float:
    """Accuracy of a k-nearest-neighbour classifier fitted on the training embeddings.

    Each test row takes the k training rows at the smallest Euclidean distance (after L2
    normalisation when `normalize`) and predicts the class with the largest vote: 1 per
    neighbour (`"uniform"`) or `1 / distance` (`"distance"`; a zero distance makes only the
    exact matches vote). Equals `sklearn.neighbors.KNeighborsClassifier(k, weights=...)` on
    the same features, barring distance ties.

    Shapes: train `[N, D]`, `[N]`; test `[M, D]`, `[M]`.
    Memory: O(N * D) plus ~32 MB of distance blocks.

    Raises:
        ValueError: `k` larger than the training set, unknown `weights`, NaN embeddings, a
            test label absent from training.
    """
    if weights not in ("uniform", "distance"):
        raise ValueError(f"weights must be 'uniform' or 'distance', got {weights!r}")
    k = require_positive_int(k, "k")
    xtr = as_embeddings(train_emb, "train_emb")
    xte = as_embeddings(test_emb, "test_emb")
    same_dim(xtr, xte, "train_emb", "test_emb")
    ytr = as_labels(train_labels, xtr.shape[0], "train_labels")
    yte = as_labels(test_labels, xte.shape[0], "test_labels")
    if normalize:
        xtr, xte = l2_normalize(xtr), l2_normalize(xte)
    classes, idx = encode(ytr)
    require_seen(classes, yte, "kNN")
    neigh, dist = top_k_neighbours(xte, xtr, k)
    pred = classes[_vote(idx[neigh], dist, classes.size, weights)]
    return float(np.mean(pred == yte))


def _agrees(anchor: np.ndarray, other: np.ndarray, rel_tol: float | None) -> np.ndarray:
    if rel_tol is None:
        return other == anchor
    return np.abs(other - anchor) <= rel_tol * np.abs(anchor)


def neighbour_agreement(
    emb: ArrayLike,
    factor: ArrayLike,
    *,
    k: int = 10,
    rel_tol: float | None = None,
    normalize: bool = True,
) -> float:
    """Mean fraction of each sample's k nearest other samples that share its factor value.

    `agreement = (1 / (N k)) sum_i sum_{j in kNN(i), j != i} [factor_j ~ factor_i]`, where `~`
    is equality for a categorical factor, or `|f_j - f_i| <= rel_tol * |f_i|` for a continuous
    one (e.g. tempo with `rel_tol = 0.04`, the Acc1 tolerance). The LOEV++ check: neighbours
    in the time branch should share tempo more often than in the invariant space. Compare with
    `neighbour_agreement_chance`.

    Shapes: emb `[N, D]`, factor `[N]`. Memory: O(N * D) plus ~32 MB of distance blocks.
    """
    k = require_positive_int(k, "k")
    x = as_embeddings(emb, "emb")
    f = as_labels(factor, x.shape[0], "factor")
    if rel_tol is not None:
        f = f.astype(np.float64)
    if normalize:
        x = l2_normalize(x)
    neigh, _ = top_k_neighbours(x, x, k, exclude_self=True)
    return float(np.mean(_agrees(f[:, None], f[neigh], rel_tol)))


def neighbour_agreement_chance(factor: ArrayLike, *, rel_tol: float | None = None) -> float:
    """Expected `neighbour_agreement` for neighbours drawn at random: the fraction of ordered
    pairs `i != j` with `factor_j ~ factor_i`. Categorical: `sum_c n_c (n_c - 1) / (N (N - 1))`.
    Continuous: counted with a sorted search, O(N log N).
    """
    f = to_numpy(factor)
    f = as_labels(f, f.shape[0] if f.ndim else -1, "factor")
    n = f.shape[0]
    if n < 2:
        raise ValueError("factor needs at least 2 samples")
    if rel_tol is None:
        counts = np.unique(f, return_counts=True)[1].astype(np.float64)
        return float(np.sum(counts * (counts - 1)) / (n * (n - 1)))
    f = f.astype(np.float64)
    s = np.sort(f)
    lo = np.searchsorted(s, f - rel_tol * np.abs(f), side="left")
    hi = np.searchsorted(s, f + rel_tol * np.abs(f), side="right")
    return float(np.sum(hi - lo - 1) / (n * (n - 1)))
