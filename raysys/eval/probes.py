"""Linear probes (scikit-learn) and the tempo accuracy conventions.

A probe standardises the features with statistics of the training split
(`StandardScaler`), then fits `LogisticRegression` (categorical target, accuracy) or `Ridge`
(continuous target, R^2). The split is given, or drawn by seed (stratified for categorical
targets). Tempo: Acc1 / Acc2 of algorithms.md section 4.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from raysys.eval._checks import (
    ArrayLike,
    as_embeddings,
    as_labels,
    as_targets,
    encode,
    require_class_size,
    require_classes,
    require_seen,
    same_dim,
)

Target = Literal["categorical", "continuous"]
TEMPO_TOLERANCE = 0.04
TEMPO_OCTAVE_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


def split_indices(
    labels: ArrayLike, *, test_fraction: float, seed: int, stratify: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) index arrays of a seeded split of `len(labels)` samples.

    Stratified by `labels` when `stratify` (every class then needs >= 2 samples).
    """
    y = as_labels(labels, len(labels), "labels")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    n_test = int(round(test_fraction * y.shape[0]))
    if n_test < 1 or n_test >= y.shape[0]:
        raise ValueError(
            f"test_fraction = {test_fraction} of {y.shape[0]} samples leaves an empty split"
        )
    if stratify:
        classes, idx = encode(y)
        require_class_size(classes, np.bincount(idx), 2, "the minimum for a stratified split")
    try:
        train, test = train_test_split(
            np.arange(y.shape[0]),
            test_size=n_test,
            random_state=seed,
            stratify=y if stratify else None,
        )
    except ValueError as e:  # e.g. fewer test slots than classes
        raise ValueError(f"cannot split {y.shape[0]} samples with stratification: {e}") from None
    return np.sort(train), np.sort(test)


def _resolve_split(
    train_emb: ArrayLike,
    train_y: ArrayLike,
    test_emb: ArrayLike | None,
    test_y: ArrayLike | None,
    *,
    categorical: bool,
    test_fraction: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), splitting the first set when no test set is given."""
    read_y = as_labels if categorical else as_targets
    x = as_embeddings(train_emb, "train_emb")
    y = read_y(train_y, x.shape[0], "train_labels")
    if (test_emb is None) != (test_y is None):
        raise ValueError("pass both test_emb and test_labels, or neither (then split by seed)")
    if test_emb is not None:
        xt = as_embeddings(test_emb, "test_emb")
        same_dim(x, xt, "train_emb", "test_emb")
        return x, y, xt, read_y(test_y, xt.shape[0], "test_labels")
    tr, te = split_indices(y, test_fraction=test_fraction, seed=seed, stratify=categorical)
    return x[tr], y[tr], x[te], y[te]


def linear_probe(
    train_emb: ArrayLike,
    train_labels: ArrayLike,
    test_emb: ArrayLike | None = None,
    test_labels: ArrayLike | None = None,
    *,
    target: Target = "categorical",
    test_fraction: float = 0.25,
    seed: int = 0,
    C: float = 1.0,
    alpha: float = 1.0,
    max_iter: int = 2000,
) -> float:
    """Linear decodability of a label from embeddings.

    `target="categorical"`: `StandardScaler -> LogisticRegression(C)` (multinomial, lbfgs);
    returns test accuracy. `target="continuous"`: `StandardScaler -> Ridge(alpha)`; returns
    test `R^2 = 1 - SS_res / SS_tot` (can be negative). Without a test set, the training set
    is split by `seed` (`test_fraction` held out, stratified for categorical targets).

    Shapes: emb `[N, D]`, labels `[N]`. Cost: one scikit-learn fit on `[N_train, D]`.
    """
    if target not in ("categorical", "continuous"):
        raise ValueError(f"target must be 'categorical' or 'continuous', got {target!r}")
    categorical = target == "categorical"
    x, y, xt, yt = _resolve_split(
        train_emb, train_labels, test_emb, test_labels,
        categorical=categorical, test_fraction=test_fraction, seed=seed,
    )
    if not categorical:
        model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, y)
        return float(r2_score(yt, model.predict(xt)))
    classes = np.unique(y)
    require_classes(classes, 2, "train_labels")
    require_seen(classes, yt, "the probe")
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    model.fit(x, y)
    return float(np.mean(model.predict(xt) == yt))


def tempo_accuracy(
    predicted_bpm: ArrayLike, true_bpm: ArrayLike, *, tolerance: float = TEMPO_TOLERANCE
) -> dict[str, float]:
    """Tempo estimation accuracies (Gouyon et al. 2006 conventions).

    Acc1: fraction with `|p - t| <= tolerance * t`. Acc2: the same, also accepting
    `p` within tolerance of `f * t` for `f` in {2, 1/2, 3, 1/3} (octave errors).
    Shapes: `[N]` each; tempos must be positive.
    """
    t = as_targets(true_bpm, len(true_bpm), "true_bpm")
    p = as_targets(predicted_bpm, t.shape[0], "predicted_bpm")
    if np.any(t <= 0):
        raise ValueError(f"true_bpm must be positive, got minimum {t.min()}")
    f = np.asarray(TEMPO_OCTAVE_FACTORS)
    hits = np.abs(p[:, None] - f[None, :] * t[:, None]) <= tolerance * f[None, :] * t[:, None]
    return {"acc1": float(np.mean(hits[:, 0])), "acc2": float(np.mean(hits.any(axis=1)))}


def tempo_probe(
    train_emb: ArrayLike,
    train_bpm: ArrayLike,
    test_emb: ArrayLike | None = None,
    test_bpm: ArrayLike | None = None,
    *,
    log_target: bool = True,
    test_fraction: float = 0.25,
    seed: int = 0,
    alpha: float = 1.0,
) -> dict[str, float]:
    """Ridge probe of tempo: `{"r2", "acc1", "acc2"}`.

    With `log_target` the ridge regresses `log2(bpm)` (octave errors are then symmetric) and
    `r2` is measured in that space; predictions are mapped back to bpm for Acc1/Acc2.
    """
    x, y, xt, yt = _resolve_split(
        train_emb, train_bpm, test_emb, test_bpm,
        categorical=False, test_fraction=test_fraction, seed=seed,
    )
    if np.any(y <= 0) or np.any(yt <= 0):
        raise ValueError("tempo targets (bpm) must be positive")
    fwd, back = (np.log2, np.exp2) if log_target else (lambda v: v, lambda v: v)
    model = make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, fwd(y))
    pred = model.predict(xt)
    return {"r2": float(r2_score(fwd(yt), pred)), **tempo_accuracy(back(pred), yt)}
