"""Two sets of evaluated runs, paired by seed: the main label's measures side by side.

    python experiments/compare_runs.py --a RUN_A_SEED0 RUN_A_SEED1 ... --b RUN_B_SEED0 ... \
        [--names "with X" "without X"] [--label label] [--space audio]

Each RUN is a folder `raysys evaluate` has written `eval/eval.json` into. The n-th run of
`--a` is paired with the n-th of `--b` (same seed: same initialisation and data order). Prints
a markdown table: each measure's mean ± 95% t-interval over seeds for both sets, the gain
a − b paired by seed with its verdict, the per-seed values, and the random-init and classic
baselines of the first `--a` run's report. Measures: NCC, logistic, kNN, N-way 1-/5-/20-shot
on the space's main label, the logistic probe with 5, 10 and 20 labels per class, and the
CDNV of the invariant head (lower = tighter classes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seedstats import as_cell, get, over_seeds, paired_gain, verdict  # noqa: E402

LOWER_IS_BETTER = {"CDNV"}


def measures(label: str, space: str) -> dict[str, tuple[str, ...]]:
    """measure name -> path under report["models"][model]."""
    shots = ("spaces", space, "few_shot", label, "by_k")
    found = {n: ("spaces", space, "labels", label, n) for n in ("ncc", "logistic", "knn")}
    found |= {f"{k}-shot": (*shots, k) for k in ("1", "5", "20")}
    budget = ("spaces", space, "labels_per_class", label, "by_k")
    found |= {f"logistic, {k}/class": (*budget, k, "logistic") for k in ("5", "10", "20")}
    found["CDNV"] = ("depth", space, "invariant", label, "cdnv")
    return found


def load(run: str) -> dict[str, Any]:
    path = Path(run) / "eval" / "eval.json"
    if not path.exists():
        raise SystemExit(f"{path}: no report (run `raysys evaluate --checkpoint {run}` first)")
    return json.loads(path.read_text())


def table(a: list[str], b: list[str], names: tuple[str, str], label: str, space: str) -> str:
    if len(a) != len(b):
        raise SystemExit(f"--a has {len(a)} runs, --b {len(b)}: pair them by seed")
    ra, rb = [load(r) for r in a], [load(r) for r in b]
    rows = [f"| {label} ({space}) | {names[0]} | {names[1]} | gain, paired | per seed "
            "| random init | classic |", "|---|---|---|---|---|---|---|"]
    for name, path in measures(label, space).items():
        va = [as_cell(get(r, "trained", *path)) for r in ra]
        vb = [as_cell(get(r, "trained", *path)) for r in rb]
        gain = paired_gain(list(zip(va, vb, strict=True)))
        said = verdict(gain, lower_is_better=name in LOWER_IS_BETTER)
        per_seed = " / ".join(
            f"{x['mean'] - y['mean']:+.3f}" if x and y else "–"
            for x, y in zip(va, vb, strict=True))  # fmt: skip
        base = [as_cell(get(ra[0], m, *path)) for m in ("random_init", "classic")]
        base_txt = [f"{c['mean']:.3f}" if c else "–" for c in base]
        rows.append(f"| {name} | {over_seeds(va)} | {over_seeds(vb)} | {said} "
                    f"| {per_seed} | {base_txt[0]} | {base_txt[1]} |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--a", nargs="+", required=True, help="runs of the first setting, by seed")
    p.add_argument("--b", nargs="+", required=True, help="runs of the second, the same seeds")
    p.add_argument("--names", nargs=2, default=("a", "b"))
    p.add_argument("--label", default="label", help="label set (eval.label_sets key)")
    p.add_argument("--space", default="audio", help="embedding space (a modality or fused)")
    args = p.parse_args(argv)
    print(table(args.a, args.b, tuple(args.names), args.label, args.space))


if __name__ == "__main__":
    main()
