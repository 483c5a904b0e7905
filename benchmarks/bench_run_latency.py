"""Wall time of short pretraining runs at two Ray Train poll intervals, alternated in one session.

    python benchmarks/bench_run_latency.py [--pairs 2] [--polls 2.0 0.5] [key=value ...]

One local Ray instance (2 CPUs, as the tests use it) and the demo archive (24 entities); then
`--pairs` rounds, each running `configs/tiny.yaml` (6 steps, overrides appended) once per
`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S` in `--polls`, in that order. Ray Train reads the variable
when a run's controller starts, so the runs of one round differ only in it. Reports each run's
seconds from `TorchTrainer.fit` to its return and, per interval, the mean and its ratio to
the first interval's. The first round also pays the first worker start-ups: compare within a
round.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.config import load_config  # noqa: E402
from raysys.data.demo import make_demo_archive  # noqa: E402
from raysys.runtime import init_ray  # noqa: E402
from raysys.train import driver  # noqa: E402
from raysys.train.callbacks import fit  # noqa: E402


def one_run(archive: Path, out: Path, poll: float, overrides: list[str]) -> float:
    """Seconds of `fit` for one tiny run with the controller polling every `poll` s."""
    os.environ[driver.POLL_ENV] = str(poll)
    cfg = load_config("configs/tiny.yaml", [f"archive={archive}", f"out={out}", *overrides])
    pipe = driver.prepare(cfg)
    driver.fit_cluster(cfg, pipe)
    trainer = driver.build_trainer(cfg, pipe)
    start = time.perf_counter()
    result = fit(trainer)
    seconds = time.perf_counter() - start
    if result.checkpoint is None:
        raise RuntimeError(f"run {out} ended without a checkpoint: {result.error}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--polls", type=float, nargs="+", default=[2.0, 0.5])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    make_demo_archive(str(work / "archive"), entities=24, seed=0, missing_fraction=0.15)
    init_ray(num_cpus=2, object_store_memory=512 * 1024**2)
    seconds: dict[float, list[float]] = {p: [] for p in args.polls}
    for round_ in range(args.pairs):
        for poll in args.polls:
            s = one_run(work / "archive", work / f"r{round_}-{poll}", poll, args.overrides)
            seconds[poll].append(s)
            print(f"round {round_}: poll {poll} s -> run {s:.1f} s", flush=True)
    base = sum(seconds[args.polls[0]]) / args.pairs
    print("\n| poll interval (s) | runs (s) | mean (s) | ratio to the first |")
    print("|---|---|---|---|")
    for poll, values in seconds.items():
        mean = sum(values) / len(values)
        runs = ", ".join(f"{v:.1f}" for v in values)
        print(f"| {poll} | {runs} | {mean:.1f} | {mean / base:.2f} |")


if __name__ == "__main__":
    main()
