"""Claim 3 over training and the issue's goal 4: how the in-training evaluation (`eval.every`)
moves over the steps, over seeds.

    python experiments/over_training.py --runs RUN_SEED0 RUN_SEED1 RUN_SEED2 \
        [--label label] [--coarse family] [--plot over-training.png]

Each run folder's metrics.jsonl holds the in-training evaluation's records (raysys/train/
intrain_eval.py: the held-out split, `data.eval_fraction`; each entity predicted out of fold):
`eval/<set>/<ncc|logistic|knn|cdnv>` and `eval/random/ncc`, the main label permuted. Prints a
markdown table (mean ± 95% t-interval over the runs at every evaluated step) and the paired
verdicts the claims ask for: semantic NCC rises and CDNV falls from the first evaluation to
the last, the random-label control stays near its start; goal 4, the last step is not worse
than the best earlier one. Runs are paired by seed; a step missing from any run is left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from panels import panels, save
from seedstats import over_seeds, paired_gain, seed_stats, verdict

COLUMNS = (("{label}", "ncc"), ("{label}", "logistic"), ("{coarse}", "ncc"),
           ("random", "ncc"), ("{label}", "cdnv"))


def eval_curve(run: Path) -> dict[int, dict[str, float]]:
    """step -> the in-training evaluation's `eval/...` values of one run folder (its
    metrics.jsonl, read as `raysys evaluate` reads it for its curves)."""
    from raysys.eval.report import eval_records
    from raysys.evaluate import read_history

    if not (run / "metrics.jsonl").is_file():
        raise SystemExit(f"--runs {run}: no metrics.jsonl (not a run folder)")
    curve: dict[int, dict[str, float]] = {}
    for record in eval_records(read_history(run)):
        if "eval/error" not in record:
            curve.setdefault(int(record["step"]), {}).update(
                {k[len("eval/"):]: v for k, v in record.items()
                 if k.startswith("eval/") and isinstance(v, int | float)})
    if not curve:
        raise SystemExit(f"--runs {run}: metrics.jsonl has no in-training evaluation "
                         "(train with eval.every=N)")
    return curve


def cell(curves: list[dict[int, dict[str, float]]], step: int, key: str) -> list[Any]:
    return [{"mean": c[step][key], "ci95": 0.0} if key in c[step] else None for c in curves]


def gain(curves: list[dict[int, dict[str, float]]], key: str, late: int, early: int
         ) -> dict[str, float] | None:
    return paired_gain(list(zip(cell(curves, late, key), cell(curves, early, key),
                                strict=True)))


def plain(got: dict[str, float] | None) -> str:
    """A gain without a better/worse word (a control)."""
    return "n/a" if got is None else f"{got['mean']:+.3f} ± {got['ci95']:.3f}"


def table(curves: list[dict[int, dict[str, float]]], steps: list[int], keys: list[str]
          ) -> list[str]:
    lines = ["| step | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for step in steps:
        lines.append(f"| {step} | " + " | ".join(over_seeds(cell(curves, step, k))
                                                 for k in keys) + " |")
    return lines


def verdicts(curves: list[dict[int, dict[str, float]]], steps: list[int], label: str,
             coarse: str) -> list[str]:
    first, last = steps[0], steps[-1]
    best_earlier = max(steps[1:-1] or steps[:1], key=lambda s: seed_stats(
        cell(curves, s, f"{label}/logistic"))["mean"])
    rows = [
        (f"{label} NCC rises: step {last} − {first}",
         verdict(gain(curves, f"{label}/ncc", last, first))),
        (f"{coarse} NCC rises: step {last} − {first}",
         verdict(gain(curves, f"{coarse}/ncc", last, first))),
        (f"{label} CDNV falls: step {last} − {first}",
         verdict(gain(curves, f"{label}/cdnv", last, first), lower_is_better=True)),
        (f"random-label NCC (the claim: stays near its start): step {last} − {first}",
         plain(gain(curves, "random/ncc", last, first))),
        (f"goal 4, {label} logistic: step {last} − the best earlier (step {best_earlier})",
         verdict(gain(curves, f"{label}/logistic", last, best_earlier))),
        (f"goal 4, {label} NCC: step {last} − step {best_earlier}",
         verdict(gain(curves, f"{label}/ncc", last, best_earlier))),
    ]
    return ["| comparison (paired by seed) | gain |", "|---|---|",
            *[f"| {name} | {word} |" for name, word in rows]]


def plot(curves: list[dict[int, dict[str, float]]], steps: list[int], keys: list[str],
         path: Path) -> None:
    fig, axes = panels(len(keys), 3.2, 3.0, sharey=False)
    for ax, key in zip(axes, keys, strict=True):
        got = [seed_stats(cell(curves, s, key)) for s in steps]
        mean = [g["mean"] for g in got]
        ax.plot(steps, mean, marker="o", color="tab:blue")
        ax.fill_between(steps, [g["mean"] - g["ci95"] for g in got],
                        [g["mean"] + g["ci95"] for g in got], color="tab:blue", alpha=0.2)
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"mean ± 95% CI over {len(curves)} seeds")
    save(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", type=Path, required=True,
                   help="run folders trained with eval.every (one per seed)")
    p.add_argument("--label", default="label", help="the main label set")
    p.add_argument("--coarse", default="family", help="a coarser label set")
    p.add_argument("--plot", type=Path, help="write the curves as PNG")
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        raise SystemExit("--runs: give 2+ run folders (seeds); the verdicts are intervals "
                         "over seeds")
    curves = [eval_curve(run) for run in args.runs]
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    if len(steps) < 2:
        raise SystemExit(f"the runs share {len(steps)} evaluated step(s); need 2+")
    keys = [f"{s.format(label=args.label, coarse=args.coarse)}/{m}" for s, m in COLUMNS]
    missing = [k for k in keys if k not in curves[0][steps[-1]]]
    if missing:
        raise SystemExit(f"no {missing} in the evaluation records (label sets: --label, "
                         f"--coarse; found {sorted(curves[0][steps[-1]])})")
    print("\n".join([*table(curves, steps, keys), "",
                     *verdicts(curves, steps, args.label, args.coarse)]))
    if args.plot:
        plot(curves, steps, keys, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
