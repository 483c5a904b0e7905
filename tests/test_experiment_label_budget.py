"""experiments/label_budget.py's section of results.md, read from the music headline runs
recorded in experiments/records/: each row is the mean over seeds of what `raysys evaluate`
measured with K labels per class, with the paired gain over random init."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))

from label_budget import label_budget_section, vs_classic  # noqa: E402
from records import RECORDS, read_record  # noqa: E402


def budget(report: dict, model: str, k: str) -> float:
    return report["models"][model]["spaces"]["audio"]["labels_per_class"]["label"]["by_k"][k][
        "logistic"]["mean"]


def test_label_budget_rows_are_the_seed_means_and_the_paired_gain():
    reports = [read_record(RECORDS / "music" / f"seed{s}.json.gz")["report"] for s in (0, 1, 2)]
    lines = label_budget_section({"music": reports}, {"music": ("label", "audio")}, "x.png")
    row = next(line for line in lines if line.startswith("| music | 5 |") and "logistic" in line)
    trained = [budget(r, "trained", "5") for r in reports]
    gains = np.subtract(trained, [budget(r, "random_init", "5") for r in reports])
    half = stats.t.ppf(0.975, 2) * gains.std(ddof=1) / np.sqrt(3)
    assert f"{np.mean(trained):.3f} ± " in row
    assert f"({gains.mean():+.3f} ± {half:.3f})" in row
    assert row.count("|") == 10  # every column filled


def test_vs_classic_needs_the_gap_outside_both_intervals():
    assert vs_classic({"mean": 0.8, "ci95": 0.03}, {"mean": 0.7, "ci95": 0.04}) == \
        "better (+0.100)"
    assert vs_classic({"mean": 0.72, "ci95": 0.03}, {"mean": 0.7, "ci95": 0.04}).startswith(
        "within CI")
    assert vs_classic(None, {"mean": 0.7, "ci95": 0.04}) == "n/a"
