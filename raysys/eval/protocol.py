"""The evaluation protocol of `raysys evaluate`: k-fold over every labelled entity.

Every entity is predicted once (stratified k-fold, `folds` = 5 by default), so an archive of
600 labelled entities gives 600 test predictions, not the ~30 of a held-out fraction. The
same folds (seeded) serve every embedding space and every baseline, so differences between
spaces are not differences between splits.

Classifiers (each fitted on the training folds only, after z-scoring every dimension with the
training folds' statistics, so hand-crafted features of mixed scales are treated fairly):
- `ncc`: nearest class centre (scikit-learn `NearestCentroid`, Euclidean);
- `logistic`: the logistic-regression probe (`LogisticRegression(C)`);
- `knn`: k nearest neighbours (cosine, majority vote).
Accuracy is pooled over all out-of-fold predictions; its 95% CI is the normal approximation
of a binomial proportion, `1.96 * sqrt(p (1 - p) / n)`.

k-fold trains on (k-1)/k of every class: 18 labels per instrument on the music corpus, 36 per
speaker on speech. The label budget the product is for is 5-20 per class, so the same
classifiers are also fitted on exactly K labelled entities per class (`eval.labels_per_class`)
and tested on every other entity, over `eval.label_draws` random draws
(`labels_per_class_classification`).

Regression factors (float columns, e.g. tempo in BPM): ridge on z-scored features, its
strength chosen among `alphas` on the training folds alone (scikit-learn `RidgeCV`, efficient
leave-one-out), R^2 of the pooled out-of-fold predictions (log2 target for tempo, with Acc1 =
within +-4 %); CI from the spread of the per-fold R^2 (`1.96 * std / sqrt(folds)`). A fixed
strength is wrong for every space at once: a 500-dimensional backbone overfits 430 training
entities at alpha 1 (R^2 below 0) where a 64-dimensional head does not.

Two results differ "outside the CI" when |a - b| > sqrt(ci_a^2 + ci_b^2), the 95% interval of
a difference of independent estimates (`compare`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from raysys.eval._checks import as_embeddings
from raysys.eval.probes import TEMPO_TOLERANCE, tempo_accuracy

Classifier = Literal["ncc", "logistic", "knn"]
CLASSIFIERS: tuple[Classifier, ...] = ("ncc", "logistic", "knn")
Z95 = 1.96


def binomial_ci(p: float, n: int) -> float:
    """Half-width of the 95% normal-approximation interval of a proportion."""
    return float(Z95 * np.sqrt(max(p * (1 - p), 0.0) / max(n, 1)))


def usable_classes(y: np.ndarray, minimum: int = 2) -> np.ndarray:
    """Bool mask of the samples whose class has >= `minimum` samples (a class seen once can
    never be both trained on and tested)."""
    classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    return counts[inverse] >= minimum


def stratified_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The seeded stratified k-fold split (scikit-learn's `StratifiedKFold`, shuffled).
    Classes smaller than `folds` are spread over fewer folds (a warning there is expected);
    when even the largest class is smaller, there are as many folds as it has samples."""
    largest = int(np.unique(y, return_counts=True)[1].max()) if len(y) else 0
    splitter = StratifiedKFold(n_splits=min(folds, max(largest, 2)), shuffle=True,
                               random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return list(splitter.split(np.zeros(len(y)), y))


def _classifier(name: Classifier, *, C: float, knn_k: int):
    if name == "ncc":
        return make_pipeline(StandardScaler(), NearestCentroid())
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    if name == "knn":
        return make_pipeline(StandardScaler(), Normalizer(),
                             KNeighborsClassifier(n_neighbors=knn_k))
    raise ValueError(f"unknown classifier {name!r}; choose from {CLASSIFIERS}")


def kfold_classification(
    x: Any, y: Sequence[Any] | np.ndarray, *, folds: int = 5, seed: int = 0,
    classifiers: Sequence[Classifier] = CLASSIFIERS, C: float = 1.0, knn_k: int = 10,
) -> dict[str, Any]:
    """Out-of-fold accuracy of each classifier on (x, y): `{clf: {mean, ci95}}` plus `n`
    (entities predicted), `classes`, `dropped` (entities of classes with < 2 samples) and
    `chance` (share of the largest class)."""
    x = as_embeddings(x, "x")
    y = np.asarray(y)
    keep = usable_classes(y)
    x, y = x[keep], y[keep]
    classes = np.unique(y)
    if classes.size < 2:
        raise ValueError(f"{classes.size} class(es) with >= 2 samples: nothing to classify")
    splits = stratified_folds(y, folds, seed)
    out: dict[str, Any] = {"n": int(y.size), "classes": int(classes.size),
                           "dropped": int((~keep).sum()),
                           "chance": float(np.unique(y, return_counts=True)[1].max() / y.size)}
    for name in classifiers:
        predicted = np.empty_like(y)
        for train, test in splits:
            k = min(knn_k, train.size)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model = _classifier(name, C=C, knn_k=k).fit(x[train], y[train])
            predicted[test] = model.predict(x[test])
        acc = float(np.mean(predicted == y))
        out[name] = {"mean": acc, "ci95": binomial_ci(acc, y.size)}
    return out


def labels_per_class_classification(
    x: Any, y: Sequence[Any] | np.ndarray, *, budgets: Sequence[int], draws: int = 10,
    seed: int = 0, classifiers: Sequence[Classifier] = ("logistic", "ncc"), C: float = 1.0,
    knn_k: int = 10,
) -> dict[str, Any]:
    """Accuracy with K labelled entities per class, K in `budgets`: each of `draws` draws
    labels K random entities of every class that has more than K and tests on the rest of
    those classes. `{"by_k": {K: {classifier: {mean, ci95}, classes, labelled, test,
    chance}}}`; ci95 is the 95% t-interval over draws. The draws depend on (seed, K) and the
    labels only, so every space evaluated on the same entities sees the same splits. A K that
    fewer than 2 classes exceed is `{"skipped": reason}`."""
    x = as_embeddings(x, "x")
    y = np.asarray(y)
    _, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
    members = [np.flatnonzero(inverse == c) for c in range(counts.size)]
    out: dict[str, Any] = {"by_k": {}}
    for k in budgets:
        eligible = np.flatnonzero(counts > k)
        if eligible.size < 2:
            out["by_k"][str(k)] = {"skipped": f"{eligible.size} class(es) have more than "
                                              f"K={k} entities"}
            continue
        rows = np.flatnonzero(np.isin(inverse, eligible))
        rng = np.random.default_rng([seed, k])
        scores: dict[str, list[float]] = {name: [] for name in classifiers}
        for _ in range(draws):
            labelled = np.concatenate([rng.choice(members[c], k, replace=False)
                                       for c in eligible])
            test = np.setdiff1d(rows, labelled)
            for name in classifiers:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model = _classifier(name, C=C, knn_k=min(knn_k, labelled.size))
                    model.fit(x[labelled], y[labelled])
                scores[name].append(float(np.mean(model.predict(x[test]) == y[test])))
        test_size = rows.size - k * eligible.size
        out["by_k"][str(k)] = {
            **{name: draw_interval(acc) for name, acc in scores.items()},
            "classes": int(eligible.size), "labelled": int(k * eligible.size),
            "test": int(test_size), "chance": float((counts[eligible] - k).max() / test_size),
        }
    return out


def draw_interval(values: Sequence[float]) -> dict[str, float]:
    """Mean and 95% t-interval half-width of repeated draws (0 for a single draw)."""
    v = np.asarray(values, dtype=np.float64)
    half = (stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size)
            if v.size > 1 else 0.0)
    return {"mean": float(v.mean()), "ci95": float(half)}


RIDGE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 5, 15))


def regression_rows(y: np.ndarray, tempo: bool) -> np.ndarray:
    """Bool mask of the targets a regression can use: finite, and positive for tempo."""
    return np.isfinite(y) & ((y > 0) if tempo else True)


def kfold_regression(x: Any, y: Sequence[float] | np.ndarray, *, folds: int = 5, seed: int = 0,
                     alphas: Sequence[float] = RIDGE_ALPHAS, tempo: bool = False,
                     tolerance: float = TEMPO_TOLERANCE) -> dict[str, Any]:
    """Out-of-fold ridge regression: `{"r2": {mean, ci95}, "alpha": [per fold], "n"}`, each
    fold's strength chosen among `alphas` on its training folds; for tempo the target is
    log2(BPM) and `acc1` (prediction within +-`tolerance` of the true BPM) is added."""
    x = as_embeddings(x, "x")
    y = np.asarray(y, dtype=np.float64)
    keep = regression_rows(y, tempo)
    x, y = x[keep], y[keep]
    if y.size < 2 * folds or np.ptp(y) == 0:
        raise ValueError(f"{y.size} finite targets with spread {np.ptp(y) if y.size else 0}: "
                         f"too few to regress with {folds} folds")
    target = np.log2(y) if tempo else y
    predicted = np.empty_like(target)
    fold_r2, chosen = [], []
    for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(x):
        model = make_pipeline(StandardScaler(), RidgeCV(alphas=alphas)).fit(x[train],
                                                                           target[train])
        predicted[test] = model.predict(x[test])
        fold_r2.append(r2_score(target[test], predicted[test]))
        chosen.append(float(model[-1].alpha_))
    out: dict[str, Any] = {
        "n": int(y.size),
        "r2": {"mean": float(r2_score(target, predicted)),
               "ci95": float(Z95 * np.std(fold_r2) / np.sqrt(folds))},
        "alpha": chosen,
    }
    if tempo:
        acc = tempo_accuracy(2 ** predicted, y, tolerance=tolerance)["acc1"]
        out["acc1"] = {"mean": acc, "ci95": binomial_ci(acc, y.size)}
    return out


def compare(a: dict[str, float] | None, b: dict[str, float] | None) -> str:
    """`"better"`, `"worse"` or `"within CI"` for a vs b ({mean, ci95} each); `"n/a"` when
    either is missing."""
    if not (isinstance(a, dict) and isinstance(b, dict) and "mean" in a and "mean" in b):
        return "n/a"
    gap = a["mean"] - b["mean"]
    if abs(gap) <= float(np.hypot(a.get("ci95", 0.0), b.get("ci95", 0.0))):
        return "within CI"
    return "better" if gap > 0 else "worse"


# -- label discovery ----------------------------------------------------------------------------

FactorKind = Literal["categorical", "continuous", "tempo"]


def is_label_column(name: str) -> bool:
    return name == "label" or name.startswith("label_")


def discover_labels(frame: pd.DataFrame) -> tuple[dict[str, str], dict[str, FactorKind]]:
    """From the manifest's label columns: categorical label sets (`name -> column`; `label`
    first, then the rest in column order; name = the column without `label_`) and factor
    kinds for every label column: numeric with a name saying tempo/bpm -> `tempo` (a
    regression target in log2 BPM), other floats -> `continuous`, anything else (strings,
    integers, booleans) -> `categorical`."""
    columns = [c for c in frame.columns if is_label_column(c)]
    columns.sort(key=lambda c: c != "label")
    label_sets: dict[str, str] = {}
    kinds: dict[str, FactorKind] = {}
    for column in columns:
        name = "label" if column == "label" else column.removeprefix("label_")
        kinds[name] = factor_kind(name, frame[column])
        if kinds[name] == "categorical":
            label_sets[name] = column
    return label_sets, kinds


def factor_kind(name: str, values: Sequence[Any] | np.ndarray | pd.Series) -> FactorKind:
    """The probe kind of a factor when none is configured: numeric with a name saying tempo or
    bpm -> `tempo`, other floats -> `continuous`, anything else -> `categorical`."""
    values = pd.Series(values).dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    if numeric and any(word in name.lower() for word in ("tempo", "bpm")):
        return "tempo"
    return "continuous" if pd.api.types.is_float_dtype(values) else "categorical"


def resolve_labels(label_sets: dict[str, str] | None, factors: dict[str, str] | None,
                   factor_kinds: dict[str, FactorKind], frame: pd.DataFrame
                   ) -> tuple[dict[str, str], dict[str, str], dict[str, FactorKind]]:
    """(label sets, factors, factor kinds) for this manifest: configured ones checked against
    the manifest's columns (the error names the `eval.*` key), missing ones discovered."""
    available = [c for c in frame.columns if is_label_column(c)]
    for key, given in (("label_sets", label_sets), ("factors", factors)):
        for name, column in (given or {}).items():
            if column not in available:
                raise ValueError(f"eval.{key}.{name}: column {column!r} is not in the archive's "
                                 f"manifest (label columns: {available}); override eval.{key} "
                                 "or leave it unset to use the columns found")
    found_sets, found_kinds = discover_labels(frame)
    sets = dict(label_sets) if label_sets is not None else found_sets
    if factors is None:
        factors = {name: ("label" if name == "label" else f"label_{name}") for name in found_kinds}
    kinds: dict[str, FactorKind] = {}
    for name, column in factors.items():
        col_name = "label" if column == "label" else column.removeprefix("label_")
        kinds[name] = factor_kinds.get(name, found_kinds.get(col_name, "categorical"))
    return sets, dict(factors), kinds
