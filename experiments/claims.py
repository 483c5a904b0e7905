"""The papers' claims (issue 14), each an ablation of the headline recipe on the benchmark
corpora: a few config variants, every seed of the headline, the same `raysys evaluate`
protocol, the random-init network and the classic features in the same table.

A claim is data (`Claim`): its variants (overrides added to the corpus's headline run) and
the measures that decide it. A variant without overrides *is* the headline run and shares
its runs; the others train under WORK/<corpus>/<claim>-<variant>/run-seed<N>. The verdict
compares the variant the paper favours with each alternative, paired by seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from seedstats import as_cell, get, over_seeds, paired_gain, seed_stats, verdict

RELEVANCE = ("retrieval", "relevance")


@dataclass(frozen=True)
class Claim:
    key: str  # folder prefix and --claims name
    title: str
    statement: str  # what the paper claims
    variants: dict[str, list[str]]  # name -> overrides on top of the headline run
    favoured: str  # the variant the claim says wins
    decide: str  # the measure that decides it (a key of `measures`)
    measures: dict[str, tuple[str, ...]]  # column -> path under a model's report; "{label}"
    # and "{space}" are filled with the corpus's main label and its audio space
    note: str = ""


CLAIMS = {
    "relevance": Claim(
        key="relevance",
        title="Continuous + binary relevance (InfoNCE, ListNet, both)",
        statement="training on graded ratings (ListNet) together with the binary pairs "
                  "(InfoNCE) ranks graded candidates better than either term alone",
        variants={"InfoNCE": [],
                  "ListNet": ["objective.w_bin=0", "objective.w_cont=1"],
                  "combined": ["objective.w_cont=1"]},
        favoured="combined",
        decide="nDCG@10",
        measures={"nDCG@10": (*RELEVANCE, "nDCG@10"), "R@1": (*RELEVANCE, "R@1"),
                  "mAP@10": (*RELEVANCE, "mAP@10"),
                  "main-label NCC": ("spaces", "{space}", "labels", "{label}", "ncc")},
        note="Graded relevance is measured on the queries training held out "
             "(`data.eval_fraction` 0.2, ~120 entities), each ranking its own rated "
             "candidates (up to 16); R@1 and mAP@10 count candidates rated >= 50 as relevant. "
             "ListNet trains on the training entities' lists only (relevance.parquet, "
             "`data.max_candidates` best per query; `data.relevance_group` puts a query next "
             "to its candidates in a batch, the same ordering for all three variants).",
    ),
}


def variant_dir(claim: Claim, variant: str) -> str | None:
    """The run folder prefix of a variant under WORK/<corpus>; None = the headline runs."""
    return None if not claim.variants[variant] else f"{claim.key}-{variant}"


def resolve(path: tuple[str, ...], label: str, space: str) -> tuple[str, ...]:
    return tuple(p.format(label=label, space=space) for p in path)


def claim_plot(claim: Claim, by_corpus: dict[str, dict[str, list[dict[str, Any]]]],
               main_of: dict[str, tuple[str, str]], path: Path) -> None:
    """One panel per corpus: the deciding measure of every variant, the random init and the
    classic features (mean ± 95% CI over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_corpus), figsize=(3.6 * len(by_corpus), 3.2),
                             squeeze=False, sharey=True)
    for ax, (corpus, variants) in zip(axes[0], by_corpus.items(), strict=True):
        decide = resolve(claim.measures[claim.decide], *main_of[corpus])
        first = next(iter(variants.values()))
        bars = {**{v: [get(r, "trained", *decide) for r in reports]
                   for v, reports in variants.items()},
                **{m.replace("_", " "): [get(r, m, *decide) for r in first]
                   for m in ("random_init", "classic")}}
        cells = [seed_stats([as_cell(v) for v in values]) or {"mean": np.nan, "ci95": 0.0}
                 for values in bars.values()]
        colours = ["C0" if name == claim.favoured else "C1" if name in variants else "0.6"
                   for name in bars]
        ax.bar(range(len(bars)), [c["mean"] for c in cells], yerr=[c["ci95"] for c in cells],
               capsize=3, color=colours)
        ax.set_xticks(range(len(bars)), list(bars), rotation=30, ha="right", fontsize=8)
        ax.set_title(corpus)
        ax.set_ylim(min(0.5, np.nanmin([c["mean"] for c in cells]) - 0.05), 1.0)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel(f"{claim.decide} (mean ± 95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def favoured_gains(claim: Claim, variants: dict[str, list[dict[str, Any]]],
                   decide: tuple[str, ...]) -> dict[str, dict[str, float] | None]:
    """The favoured variant minus each alternative on the deciding measure, paired by seed
    (`variants[name]` are that variant's reports in seed order)."""
    favoured = variants[claim.favoured]
    return {other: paired_gain([(get(a, "trained", *decide), get(b, "trained", *decide))
                                for a, b in zip(favoured, reports, strict=True)])
            for other, reports in variants.items() if other != claim.favoured}


def reproduced(gains: dict[str, dict[str, float] | None]) -> bool:
    """The favoured variant beats every alternative: each paired interval above 0."""
    return all(g is not None and g["mean"] - g["ci95"] > 0 for g in gains.values())


def claim_section(claim: Claim, by_corpus: dict[str, dict[str, list[dict[str, Any]]]],
                  main_of: dict[str, tuple[str, str]], plot: str) -> list[str]:
    """The claim's table per corpus (variants, random init and classic) and its verdict per
    corpus. `by_corpus[corpus][variant]`: that variant's reports, one per seed."""
    lines = [f"## Claim: {claim.title}", "", f"The claim: {claim.statement}. {claim.note}", "",
             f"![{claim.key}]({plot})", "",
             "| corpus | variant | overrides | " + " | ".join(claim.measures) + " |",
             "|---|---|---|" + "---|" * len(claim.measures)]
    verdicts = []
    for corpus, variants in by_corpus.items():
        label, space = main_of[corpus]
        paths = {m: resolve(p, label, space) for m, p in claim.measures.items()}
        for variant, reports in variants.items():
            cells = [over_seeds([as_cell(get(r, "trained", *p)) for r in reports])
                     for p in paths.values()]
            overrides = " ".join(claim.variants[variant]) or "(the headline run)"
            lines.append(f"| {corpus} | {variant} | `{overrides}` | " + " | ".join(cells) + " |")
        first = next(iter(variants.values()))
        for model in ("random_init", "classic"):
            cells = [over_seeds([as_cell(get(r, model, *p)) for r in first])
                     for p in paths.values()]
            lines.append(f"| {corpus} | {model.replace('_', ' ')} | | " + " | ".join(cells)
                         + " |")
        gains = favoured_gains(claim, variants, paths[claim.decide])
        verdicts += [f"| {corpus} | {claim.favoured} − {other} | {verdict(g)} |"
                     for other, g in gains.items()]
        verdicts.append(f"| {corpus} | **claim** | "
                        f"{'reproduced' if reproduced(gains) else 'not reproduced'} |")
    return lines + ["", f"{claim.favoured} against each alternative on {claim.decide}, "
                    "paired by seed (mean gain ± 95% t-interval; `better` when the interval "
                    "is above 0):", "", "| corpus | comparison | gain |", "|---|---|---|",
                    *verdicts, ""]
