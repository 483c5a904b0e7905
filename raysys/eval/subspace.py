"""Subspace probes for LOEV / LOEV++ (algorithms.md section 4).

For each embedding space (the backbone, the invariant head, one head or branch per tracked
augmentation) and each factor (pitch class, tempo, ...): how linearly decodable the factor is
(a linear probe) and how often nearest neighbours in that space share it (neighbour
agreement). Expected pattern: the invariant space loses key/tempo (probe near chance), the
head/branch of that augmentation keeps it, and its neighbours share tempo more often.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np

from raysys.eval._checks import ArrayLike, as_embeddings, as_labels, encode, to_numpy
from raysys.eval.neighbours import neighbour_agreement, neighbour_agreement_chance
from raysys.eval.probes import TEMPO_TOLERANCE, linear_probe, split_indices, tempo_probe

FactorKind = Literal["categorical", "continuous", "tempo"]


def infer_kind(values: np.ndarray) -> FactorKind:
    """Floating-point factors are continuous; integers, strings and booleans categorical."""
    return "continuous" if values.dtype.kind == "f" else "categorical"


def _chance_accuracy(y_train: np.ndarray, y_test: np.ndarray) -> float:
    """Test accuracy of always predicting the most frequent training class."""
    classes, idx = encode(y_train)
    return float(np.mean(y_test == classes[np.argmax(np.bincount(idx))]))


def _probe_row(
    x: np.ndarray, f: np.ndarray, kind: FactorKind, tr: np.ndarray, te: np.ndarray, C: float,
    alpha: float,
) -> dict[str, float | str]:
    """Probe scores of one (space, factor) on a fixed split."""
    if kind == "tempo":
        res = tempo_probe(x[tr], f[tr], x[te], f[te], alpha=alpha)
        return {"probe_metric": "r2", "probe": res["r2"], "probe_chance": 0.0,
                "acc1": res["acc1"], "acc2": res["acc2"]}
    if kind == "continuous":
        score = linear_probe(x[tr], f[tr], x[te], f[te], target="continuous", alpha=alpha)
        return {"probe_metric": "r2", "probe": score, "probe_chance": 0.0}
    score = linear_probe(x[tr], f[tr], x[te], f[te], C=C)
    return {"probe_metric": "accuracy", "probe": score,
            "probe_chance": _chance_accuracy(f[tr], f[te])}


def subspace_probes(
    embeddings_by_space: Mapping[str, ArrayLike],
    factors: Mapping[str, ArrayLike],
    *,
    factor_kinds: Mapping[str, FactorKind] | None = None,
    test_fraction: float = 0.25,
    seed: int = 0,
    k: int = 10,
    rel_tol: float = TEMPO_TOLERANCE,
    C: float = 1.0,
    alpha: float = 1.0,
) -> list[dict[str, float | str]]:
    """One row per (space, factor): linear decodability and neighbour agreement.

    Every space is probed on the same seeded split of each factor (stratified for categorical
    factors), so rows of one factor compare directly. Row keys: `space`, `factor`, `kind`,
    `probe_metric` ("accuracy" or "r2"), `probe`, `probe_chance` (majority-class accuracy, or
    0 for R^2), `agreement` (mean fraction of the k nearest neighbours, cosine, sharing the
    factor: equal if categorical, within `rel_tol` relative if continuous/tempo),
    `agreement_chance`; tempo rows add `acc1`, `acc2` of the ridge probe.

    Shapes: every space `[N, D_space]`, every factor `[N]`. Cost per row: one probe fit and
    a kNN search (O(N^2 D) time, ~32 MB blocks).
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
    rows: list[dict[str, float | str]] = []
    for fname, values in factors.items():
        f = as_labels(to_numpy(values), n, f"factors[{fname!r}]")
        kind = kinds.get(fname, infer_kind(f))
        if kind not in ("categorical", "continuous", "tempo"):
            raise ValueError(f"factor_kinds[{fname!r}] = {kind!r} is not a known kind")
        tol = None if kind == "categorical" else rel_tol
        tr, te = split_indices(f, test_fraction=test_fraction, seed=seed,
                               stratify=kind == "categorical")
        chance = neighbour_agreement_chance(f, rel_tol=tol)
        for sname, x in spaces.items():
            if x.shape[0] != n:
                raise ValueError(f"space {sname!r} has {x.shape[0]} rows, expected {n}")
            row: dict[str, float | str] = {"space": sname, "factor": fname, "kind": kind}
            row.update(_probe_row(x, f, kind, tr, te, C, alpha))
            row["agreement"] = neighbour_agreement(x, f, k=k, rel_tol=tol)
            row["agreement_chance"] = chance
            rows.append(row)
    return rows


def format_table(rows: list[dict[str, float | str]]) -> str:
    """Markdown table of `subspace_probes` rows (floats to 3 decimals)."""
    if not rows:
        return ""
    cols = list(dict.fromkeys(key for row in rows for key in row))
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in cols) + " |" for row in rows]
    return "\n".join(lines)
