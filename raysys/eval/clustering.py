"""Clustering diagnostics of Ben-Shaul et al., "Reverse Engineering Self-Supervised Learning"
(NeurIPS 2023): nearest class-centre (NCC) accuracy and class-distance normalised variance
(CDNV), both on L2-normalised embeddings, plus the random-label control.

Reported for several label sets (sample level, fine, coarse, random) and per layer; semantic
NCC should rise and CDNV fall during training while random-label NCC stays near chance.
"""

from __future__ import annotations

import numpy as np

from raysys.eval._checks import (
    ArrayLike,
    as_embeddings,
    as_labels,
    block_rows,
    encode,
    l2_normalize,
    require_class_size,
    require_classes,
    require_seen,
    same_dim,
    to_numpy,
)


def class_means(emb: np.ndarray, idx: np.ndarray, n_classes: int) -> np.ndarray:
    """`mu_c = mean_{i: y_i = c} emb_i`, shape `[C, D]` (every class must occur)."""
    sums = np.zeros((n_classes, emb.shape[1]))
    np.add.at(sums, idx, emb)
    return sums / np.bincount(idx, minlength=n_classes)[:, None]


def _nearest_centre(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """argmin_c ||x - mu_c||^2 per row, computed in row blocks (memory O(block * C))."""
    sq_means = (means**2).sum(axis=1)
    out = np.empty(x.shape[0], dtype=np.int64)
    block = block_rows(means.shape[0])
    for s in range(0, x.shape[0], block):
        xb = x[s : s + block]
        # ||x||^2 is constant per row and does not change the argmin.
        out[s : s + block] = np.argmin(sq_means[None, :] - 2.0 * xb @ means.T, axis=1)
    return out


def ncc_accuracy(
    train_emb: ArrayLike,
    train_labels: ArrayLike,
    test_emb: ArrayLike,
    test_labels: ArrayLike,
) -> float:
    """Nearest class-centre accuracy.

    With `f` the L2-normalised embedding, `mu_c` the mean of `f(x)` over training samples of
    class c (not re-normalised), each test sample is predicted `argmin_c ||f(x) - mu_c||` and
    the fraction predicted correctly is returned. Pass the training set as test set for the
    train NCC accuracy. Ties go to the class that sorts first.

    Shapes: train_emb `[N, D]`, train_labels `[N]`, test_emb `[M, D]`, test_labels `[M]`.
    Memory: O((N + M) * D) plus ~32 MB blocks of `[rows, C]`.

    Raises:
        ValueError: fewer than 2 training classes, a test label absent from training, NaN
            embeddings, or mismatched shapes.
    """
    xtr = l2_normalize(as_embeddings(train_emb, "train_emb"))
    xte = l2_normalize(as_embeddings(test_emb, "test_emb"))
    same_dim(xtr, xte, "train_emb", "test_emb")
    ytr = as_labels(train_labels, xtr.shape[0], "train_labels")
    yte = as_labels(test_labels, xte.shape[0], "test_labels")
    classes, idx = encode(ytr)
    require_classes(classes, 2, "train_labels")
    require_seen(classes, yte, "NCC")
    means = class_means(xtr, idx, classes.size)
    pred = classes[_nearest_centre(xte, means)]
    return float(np.mean(pred == yte))


def _class_variances(x: np.ndarray, idx: np.ndarray, means: np.ndarray) -> np.ndarray:
    """`Var_c = mean_{i in c} ||x_i - mu_c||^2`, shape `[C]`."""
    sq = ((x - means[idx]) ** 2).sum(axis=1)
    return np.bincount(idx, weights=sq, minlength=means.shape[0]) / np.bincount(
        idx, minlength=means.shape[0]
    )


def cdnv(emb: ArrayLike, labels: ArrayLike, *, min_class_size: int = 2) -> float:
    """Class-distance normalised variance, averaged over unordered class pairs.

    `CDNV(i, j) = (Var_i + Var_j) / (2 ||mu_i - mu_j||^2)` with `Var_c = mean ||f(x) - mu_c||^2`
    over the samples of class c and `f` the L2-normalised embedding; returns
    `mean_{i < j} CDNV(i, j)`. Lower means better separated classes.

    Result when two class means coincide (e.g. a collapsed representation): `inf`.
    Shapes: emb `[N, D]`, labels `[N]`. Memory: O(N * D) plus ~32 MB blocks of class pairs.

    Raises:
        ValueError: fewer than 2 classes, or a class with fewer than `min_class_size` samples
            (a singleton class has variance 0, which biases the mean; pass 1 to allow it).
    """
    x = l2_normalize(as_embeddings(emb, "emb"))
    y = as_labels(labels, x.shape[0], "labels")
    classes, idx = encode(y)
    require_classes(classes, 2, "labels")
    require_class_size(classes, np.bincount(idx), min_class_size, "min_class_size")
    means = class_means(x, idx, classes.size)
    var = _class_variances(x, idx, means)
    return _mean_pair_ratio(means, var)


def _mean_pair_ratio(means: np.ndarray, var: np.ndarray) -> float:
    """mean over i < j of (var_i + var_j) / (2 ||mu_i - mu_j||^2), in row blocks."""
    n = means.shape[0]
    sq = (means**2).sum(axis=1)
    total, n_pairs = 0.0, n * (n - 1) // 2
    block = block_rows(n)
    for s in range(0, n, block):
        rows = np.arange(s, min(s + block, n))
        d2 = sq[rows, None] + sq[None, :] - 2.0 * means[rows] @ means.T
        upper = np.arange(n)[None, :] > rows[:, None]
        scale = (sq[rows, None] + sq[None, :])[upper]
        d2 = d2[upper]
        num = (var[rows, None] + var[None, :])[upper]
        # The expansion loses ~1e-16 relative precision: treat such distances as coincident.
        if np.any(d2 <= 1e-13 * np.maximum(scale, 1e-300)):
            return float("inf")
        total += float(np.sum(num / (2.0 * d2)))
    return total / n_pairs


def random_labels(labels: ArrayLike, seed: int) -> np.ndarray:
    """The random-label control: `labels` permuted by `np.random.default_rng(seed)`.

    Class sizes are kept, so NCC chance level and CDNV's pair count match the real labels.
    """
    y = to_numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {y.shape}")
    return y[np.random.default_rng(seed).permutation(y.shape[0])]
