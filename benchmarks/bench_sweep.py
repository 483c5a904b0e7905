"""ASHA against running every trial to the end, at the same num_samples and search space.

    python benchmarks/bench_sweep.py --archive /tmp/bench-archive --out /tmp/bench-sweep \
        --samples 2 --steps 8 [key=value ...]

Runs the same sweep twice on a new local Ray instance (grid search over `train.lr`, so both
sweeps see the same trials): `sweep.scheduler=asha` and `sweep.scheduler=none`. Reports per
sweep: wall time, total trial-steps, the best trial's values (same best config?), the
per-trial start-up cost (trial start -> first report, from Tune's `time_total_s`) and the
share of the sweep's wall time spent in training steps (sum over trials of steps x the trial's
steady step time, measured between its first and last report). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.tune.sweep import run_sweep, sweep_config  # noqa: E402

LRS = [1e-12, 5e-2, 1e-3, 1e-2]  # --samples N takes the first N (grid order)


def step_time(history: pd.DataFrame) -> float:
    """Seconds per step of one trial between its first and last report."""
    h = history.dropna(subset=["time_total_s"]).drop_duplicates("step", keep="first")
    if len(h) < 2:
        return float("nan")
    return float((h["time_total_s"].iloc[-1] - h["time_total_s"].iloc[0])
                 / max(h["step"].iloc[-1] - h["step"].iloc[0], 1))


def executed_steps(run: Path) -> int:
    """Steps a trial really trained (its metrics.jsonl): a stop reaches a trial's workers
    only after a report round trip, so a stopped trial may train on for a while."""
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines() if line.strip()]
    return max(steps, default=0)


def measure(args: argparse.Namespace, scheduler: str) -> dict:
    out = Path(args.out) / scheduler
    lrs = LRS[: args.samples]
    tree, cfg = sweep_config(args.config, [
        f"archive={args.archive}", f"out={out}", f"train.steps={args.steps}",
        "train.log_every=2", f"train.checkpoint_every={args.steps // 2}", "train.warmup_steps=1",
        "eval.every=2", "data.eval_fraction=0.5", "sweep.search=grid", "sweep.num_samples=1",
        f"sweep.metric={args.metric}", f"sweep.scheduler={scheduler}", "sweep.grace_period=4",
        "sweep.reduction_factor=2", f"sweep.space.train.lr={{choice: {lrs}}}", *args.overrides])
    start = time.perf_counter()
    summary = run_sweep(tree, cfg)
    wall = time.perf_counter() - start
    results = pd.read_parquet(out / "results.parquet")
    history = pd.read_parquet(out / "history.parquet")
    train_s = sum(step_time(h) * int(results.set_index("trial_id").loc[t, "steps"])
                  for t, h in history.groupby("trial_id"))
    best = results.set_index("trial_id").loc[summary["best_trials"][0]]
    executed = sum(executed_steps(Path(run)) for run in results["run"])
    return {"scheduler": scheduler, "wall_s": wall, "trial_steps": int(results["steps"].sum()),
            "executed_steps": executed,
            "stopped": int((results["state"] == "stopped").sum()),
            "best_lr": best["config/train.lr"], "best_metric": best[args.metric],
            "startup_s": results["startup_s"].mean(), "train_share": train_s / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--samples", type=int, default=2, choices=range(2, len(LRS) + 1))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--metric", default="eval/label/ncc")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args()
    if not Path(args.archive).exists():
        from raysys.data.demo import make_demo_archive

        make_demo_archive(args.archive, entities=48, seed=0, missing_fraction=0.1)
    from raysys.runtime import init_ray

    init_ray("local", num_cpus=2, include_dashboard=True)
    rows = [measure(args, s) for s in ("asha", "none")]
    print("\n| scheduler | wall s | trial-steps (reported) | steps trained | stopped early | "
          "best lr | best metric | start-up s/trial | share of wall in steps |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scheduler']} | {r['wall_s']:.0f} | {r['trial_steps']} | "
              f"{r['executed_steps']} | {r['stopped']} | "
              f"{r['best_lr']:g} | {r['best_metric']:.3f} | {r['startup_s']:.0f} | "
              f"{r['train_share']:.0%} |")
    print(f"same best config: {rows[0]['best_lr'] == rows[1]['best_lr']}")


if __name__ == "__main__":
    main()
