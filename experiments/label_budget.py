"""results.md's label-budget section: the main label with K labelled entities per class.

`raysys evaluate` fits the logistic probe and the nearest centre on K labelled entities of
every class that has more than K (`eval.labels_per_class`, 10 draws each) and tests on all the
others. k-fold trains on four fifths of every class (18 per instrument on music, 36 per
speaker on speech); the product is for 5-20 labels per class, so this is where issue 14's
goal 1 is asked in the regime its users are in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from panels import panels, save
from seedstats import MODELS, get, over_seeds, paired_gain, seed_stats, verdict

from raysys.eval.protocol import compare

CLASSIFIERS = {"logistic": "-", "ncc": "--"}


def budget_cells(reports: list[dict[str, Any]], main: str, space: str, model: str, k: str,
                 classifier: str) -> list[Any]:
    """Each seed's `{mean, ci95}` for one model, K and classifier ({} where not measured)."""
    return [get(r, model, "spaces", space, "labels_per_class", main, "by_k", k, classifier)
            for r in reports]


def budgets(reports: list[dict[str, Any]], main: str, space: str) -> dict[str, dict[str, Any]]:
    """K -> the trained model's first seed's cell (classes, tested), for the K measured."""
    by_k = get(reports[0], "trained", "spaces", space, "labels_per_class", main, "by_k")
    return {k: cell for k, cell in by_k.items() if isinstance(cell, dict) and "classes" in cell}


def vs_classic(trained: dict[str, float] | None, classic: dict[str, float] | None) -> str:
    """Trained − classic over seeds (classic is one deterministic feature set: its draws'
    interval), worded as the protocol's `compare`: `better`/`worse` outside both intervals."""
    if trained is None or classic is None:
        return "n/a"
    return f"{compare(trained, classic)} ({trained['mean'] - classic['mean']:+.3f})"


def label_budget_section(by_corpus: dict[str, list[dict[str, Any]]],
                         main_of: dict[str, tuple[str, str]], plot: str) -> list[str]:
    lines = ["## Goal 1 at 5-20 labels per class", "",
             "The headline's logistic probe and nearest centre are k-fold: they train on four "
             "fifths of every class (18 labelled recordings per instrument on music, 36 per "
             "speaker on speech). Here the same classifiers are fitted on K labelled entities "
             "of every class that has more than K and tested on all the others "
             "(`eval.labels_per_class`, 10 draws of the labelled set per seed, the same draws "
             "for the three models); mean ± 95% t-interval over seeds. `vs random init` is "
             "paired by seed; `vs classic` is better/worse outside the combined interval, "
             "with the difference. Classes with K or fewer entities drop out at that K "
             "(`classes`).", "", f"![label budget]({plot})", "",
             "| corpus | K | classes / tested | classifier | trained | random init | classic "
             "| vs random init | vs classic |", "|---|---|---|---|---|---|---|---|---|"]
    for corpus, reports in by_corpus.items():
        main, space = main_of[corpus]
        for k, first in budgets(reports, main, space).items():
            for classifier in CLASSIFIERS:
                cells = {m: budget_cells(reports, main, space, m, k, classifier)
                         for m in MODELS}
                stats = {m: seed_stats(v) for m, v in cells.items()}
                gain = paired_gain(list(zip(cells["trained"], cells["random_init"],
                                            strict=True)))
                lines.append(f"| {corpus} | {k} | {first['classes']} / {first['test']} | "
                             f"{classifier} | "
                             + " | ".join(over_seeds(v) for v in cells.values())
                             + f" | {verdict(gain)} | "
                             f"{vs_classic(stats['trained'], stats['classic'])} |")
    return lines + [""]


def label_budget_plot(by_corpus: dict[str, list[dict[str, Any]]],
                      main_of: dict[str, tuple[str, str]], path: Path) -> None:
    """One panel per corpus: accuracy against K per model, logistic solid, NCC dashed."""
    fig, axes = panels(len(by_corpus), 4.2, 3.4)
    for ax, (corpus, reports) in zip(axes, by_corpus.items(), strict=True):
        main, space = main_of[corpus]
        ks = list(budgets(reports, main, space))
        for i, model in enumerate(MODELS):
            for classifier, style in CLASSIFIERS.items():
                got = [seed_stats(budget_cells(reports, main, space, model, k, classifier))
                       or {"mean": np.nan, "ci95": 0.0} for k in ks]
                ax.errorbar([int(k) for k in ks], [g["mean"] for g in got],
                            yerr=[g["ci95"] for g in got], color=f"C{i}", linestyle=style,
                            marker="o", capsize=2,
                            label=f"{model.replace('_', ' ')}, {classifier}")
        ax.set_xticks([int(k) for k in ks], ks)
        ax.set_title(f"{corpus}: {main}, {space}")
        ax.set_xlabel("K (labelled entities per class)")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy on the other entities")
    axes[0].legend(fontsize=6)
    save(fig, path)
