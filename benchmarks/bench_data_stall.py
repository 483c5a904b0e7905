"""Data stall: the share of step time the trainer waits for data, in the demo configuration.

    .venv/bin/python benchmarks/bench_data_stall.py                 # configs/demo.yaml, 40 steps
    .venv/bin/python benchmarks/bench_data_stall.py --steps 80 --set data.decode_cpus=1.0

Runs a real, short pretraining (`raysys.train.driver.pretrain`: Ray Data pipeline streaming
into 2 Ray Train workers with DeepSpeed) and reads `data_wait_fraction` from
`RUN/metrics.jsonl`: per log interval, rank 0's time blocked in `next(batches)` divided by its
time in `next()` plus forward/backward/step (checkpoint writing is in neither). The first log
interval holds the pipeline's start-up (workers importing torch, the first tasks) and is
excluded; the steady-state figure is the mean over the remaining intervals. The demo
configuration evaluates in training (`eval.every`); those runs share the CPUs, so the
intervals right after an eval step are part of the figure (`--set eval.every=0` leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def steady_state(records: list[dict], key: str) -> float:
    """Mean of `key` over the log intervals after the first one (start-up excluded)."""
    values = [r[key] for r in records[1:] if r.get(key) is not None]
    if not values:
        raise ValueError(f"need at least 2 log intervals with {key}; raise --steps")
    return float(np.mean(values))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--set", nargs="*", default=[], help="dotted overrides, e.g. data.batch_size=8")
    p.add_argument("--archive", help="existing archive (default: build a demo archive)")
    p.add_argument("--entities", type=int, default=512, help="demo archive size (raysys demo's)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/data_stall.json")
    args = p.parse_args()

    from raysys.config import load_config
    from raysys.data.demo import make_demo_archive
    from raysys.train.driver import pretrain

    work = Path(tempfile.mkdtemp(prefix="raysys-stall-"))
    archive = args.archive or str(work / "archive")
    if args.archive is None:
        make_demo_archive(archive, entities=args.entities, seed=0)
    overrides = [f"archive={archive}", f"out={work / 'run'}", f"train.steps={args.steps}",
                 f"train.log_every={args.log_every}", "train.tensorboard=false",
                 f"train.checkpoint_every={args.steps}", *args.set]
    cfg = load_config(args.config, overrides)
    from raysys.runtime import init_ray  # a private local instance

    init_ray(num_cpus=None)  # pretrain() then uses it
    started = time.perf_counter()
    summary = pretrain(cfg)
    wall = time.perf_counter() - started
    lines = Path(summary["metrics"]).read_text().splitlines()
    logged = [json.loads(line) for line in lines if line.strip()]
    # metrics.jsonl also holds the in-training eval records (`eval/...`, no step timings)
    records = [r for r in logged if "data_wait_fraction" in r]
    eval_steps = sorted({r["step"] for r in logged if any(k.startswith("eval/") for k in r)})
    result = {
        "config": args.config, "overrides": overrides, "wall_s": wall, "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "intervals": [{k: r.get(k) for k in ("step", "data_wait_fraction", "samples_per_s")}
                      for r in records],
        "data_wait_fraction_steady": steady_state(records, "data_wait_fraction"),
        "samples_per_s_steady": steady_state(records, "samples_per_s"),
        "data_wait_fraction_first_interval": records[0].get("data_wait_fraction"),
        "eval_steps": eval_steps,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for r in result["intervals"]:
        print(f"step {r['step']}: data wait {r['data_wait_fraction']:.1%}  "
              f"{r['samples_per_s']:.1f} samples/s")
    print(f"steady-state data_wait_fraction {result['data_wait_fraction_steady']:.1%} "
          f"(first interval excluded); {result['samples_per_s_steady']:.1f} samples/s; "
          f"wall {wall:.0f}s, load {result['load_avg_1m']:.1f}; in-training eval at steps "
          f"{eval_steps or 'none'}")


if __name__ == "__main__":
    main()
