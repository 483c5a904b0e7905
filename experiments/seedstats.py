"""Figures over training seeds for the experiment pages: reading a value out of an
`raysys evaluate` report, its mean with a 95% t-interval over seeds, and gains paired by
seed (each seed's own initialisation and data order on both sides)."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

MODELS = ("trained", "random_init", "classic")  # the report's models, in table order


def get(report: dict[str, Any], model: str, *path: str) -> Any:
    """report["models"][model][path...], or {} where the path does not exist."""
    node: Any = report["models"].get(model, {})
    for p in path:
        node = node.get(p, {}) if isinstance(node, dict) else {}
    return node


def as_cell(value: Any) -> dict[str, float] | None:
    """A `{mean, ci95}` cell of a report value: a k-fold result as is, a plain number (a
    retrieval figure, which has no within-run CI) with ci95 0."""
    if isinstance(value, dict) and "mean" in value:
        return value
    if isinstance(value, int | float) and np.isfinite(value):
        return {"mean": float(value), "ci95": 0.0}
    return None


def seed_stats(values: list[Any]) -> dict[str, float] | None:
    """{mean, ci95} over seeds (or the one run's own) of `{mean, ci95}` values."""
    values = [v for v in values if isinstance(v, dict) and "mean" in v]
    if not values:
        return None
    means = np.array([v["mean"] for v in values])
    if len(means) == 1 or np.ptp(means) == 0:
        return {"mean": float(means[0]), "ci95": float(values[0]["ci95"])}
    half = stats.t.ppf(0.975, len(means) - 1) * means.std(ddof=1) / np.sqrt(len(means))
    return {"mean": float(means.mean()), "ci95": float(half)}


def over_seeds(values: list[Any]) -> str:
    """`mean ± CI` of seed_stats, or "skipped"."""
    got = seed_stats(values)
    return f"{got['mean']:.3f} ± {got['ci95']:.3f}" if got else "skipped"


def paired_gain(pairs: list[tuple[Any, Any]]) -> dict[str, float] | None:
    """a − b paired by seed: the mean gain with a 95% t-interval over seeds (one seed: the two
    cells' CIs combined); None when a cell is missing."""
    gaps = []
    for a, b in pairs:
        a, b = as_cell(a), as_cell(b)
        if a is None or b is None:
            return None
        gaps.append({"mean": a["mean"] - b["mean"], "ci95": float(np.hypot(a["ci95"], b["ci95"]))})
    return seed_stats(gaps)


def verdict(gain: dict[str, float] | None, lower_is_better: bool = False) -> str:
    """`better (+x ± y)`, `worse (…)` or `within CI (…)` of a paired gain (a fall is better
    when `lower_is_better`, e.g. CDNV)."""
    if gain is None:
        return "n/a"
    sign = -1 if lower_is_better else 1
    word = ("better" if sign * gain["mean"] - gain["ci95"] > 0 else
            "worse" if sign * gain["mean"] + gain["ci95"] < 0 else "within CI")
    return f"{word} ({gain['mean']:+.3f} ± {gain['ci95']:.3f})"
