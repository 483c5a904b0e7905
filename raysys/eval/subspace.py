"""Subspace probes for LOEV / LOEV++ (algorithms.md section 4), on the k-fold protocol.

For each embedding space (the backbone, the invariant head, one head or branch per tracked
augmentation) and each factor (pitch class, tempo, ...): how linearly decodable the factor is
(`raysys.eval.protocol`: the logistic probe's out-of-fold accuracy, or ridge R^2 with its
strength chosen on the training folds) and how often nearest neighbours in that space share it
(neighbour agreement, against its chance level). Expected pattern: the invariant space loses
key/tempo (probe near chance), the head/branch of that augmentation keeps it, and its
neighbours share tempo more often. `raysys evaluate` reports these rows per modality.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from raysys.eval._checks import ArrayLike, as_embeddings, as_labels, guarded, to_numpy
from raysys.eval.neighbours import neighbour_agreement, neighbour_agreement_chance
from raysys.eval.probes import TEMPO_TOLERANCE
from raysys.eval.protocol import (
    FactorKind,
    factor_kind,
    kfold_classification,
    kfold_regression,
    regression_rows,
    usable_classes,
)


def probe_row(x: np.ndarray, f: np.ndarray, kind: FactorKind, *, folds: int, seed: int,
              C: float, k: int, rel_tol: float) -> dict[str, Any]:
    """One (space, factor): `metric` ("accuracy" or "R2"), `value` {mean, ci95}, `chance`
    (largest class share, or 0 for R^2); tempo adds `acc1` and every regression the chosen
    ridge strength per fold (`alpha`); `agreement`, `agreement_chance` (neighbour agreement,
    cosine, `k` neighbours; within `rel_tol` relative for continuous factors). A probe the
    data cannot support is `{"skipped": reason}` in its place."""
    tol = None if kind == "categorical" else rel_tol
    if kind == "categorical":  # the classes the probe can use: agreement counts the same rows
        keep = usable_classes(f)
        x, f = x[keep], f[keep]
        got = guarded(kfold_classification, x, f, folds=folds, seed=seed,
                      classifiers=("logistic",), C=C)
        row = ({"metric": "accuracy", "value": got["logistic"], "chance": got["chance"]}
               if "logistic" in got else got)
    else:  # the rows kfold_regression uses, so that agreement counts the same entities
        f = f.astype(np.float64)
        ok = regression_rows(f, kind == "tempo")
        x, f = x[ok], f[ok]
        got = guarded(kfold_regression, x, f, folds=folds, seed=seed,
                      tempo=kind == "tempo", tolerance=rel_tol)
        row = ({"metric": "R2", "value": got["r2"], "chance": 0.0, "acc1": got.get("acc1"),
                "alpha": got["alpha"]} if "r2" in got else got)
    if "skipped" in row:
        return row
    agreement = guarded(neighbour_agreement, x, f, k=min(k, len(f) - 1), rel_tol=tol)
    return {**row, "agreement": agreement,
            "agreement_chance": neighbour_agreement_chance(f, rel_tol=tol)}


def subspace_probes(
    embeddings_by_space: Mapping[str, ArrayLike],
    factors: Mapping[str, ArrayLike],
    *,
    factor_kinds: Mapping[str, FactorKind] | None = None,
    folds: int = 5,
    seed: int = 0,
    k: int = 10,
    rel_tol: float = TEMPO_TOLERANCE,
    C: float = 1.0,
) -> list[dict[str, Any]]:
    """One row per (space, factor): `space`, `factor`, `kind` and `probe_row`'s measures.
    Every space is probed on the same seeded folds of each factor, so rows of one factor
    compare directly.

    Shapes: every space `[N, D_space]`, every factor `[N]`. Cost per row: `folds` probe fits
    and a kNN search (O(N^2 D) time, ~32 MB blocks).
    """
    spaces = {name: as_embeddings(e, f"embeddings_by_space[{name!r}]")
              for name, e in embeddings_by_space.items()}
    if not spaces or not factors:
        raise ValueError("subspace_probes needs at least one space and one factor")
    n = next(iter(spaces.values())).shape[0]
    kinds = dict(factor_kinds or {})
    unknown = set(kinds) - set(factors)
    if unknown:
        raise ValueError(f"factor_kinds names factors that are not given: {sorted(unknown)}")
    for sname, x in spaces.items():
        if x.shape[0] != n:
            raise ValueError(f"space {sname!r} has {x.shape[0]} rows, expected {n}")
    rows: list[dict[str, Any]] = []
    for fname, values in factors.items():
        f = as_labels(to_numpy(values), n, f"factors[{fname!r}]")
        kind = kinds.get(fname, factor_kind(fname, f))
        if kind not in ("categorical", "continuous", "tempo"):
            raise ValueError(f"factor_kinds[{fname!r}] = {kind!r} is not a known kind")
        for sname, x in spaces.items():
            rows.append({"space": sname, "factor": fname, "kind": kind,
                         **probe_row(x, f, kind, folds=folds, seed=seed, C=C, k=k,
                                     rel_tol=rel_tol)})
    return rows
