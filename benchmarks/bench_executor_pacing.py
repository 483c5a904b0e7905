"""Pretraining speed with Ray Data's executor paced (`data.executor_pause_ms`) or spinning (0).

    python benchmarks/bench_executor_pacing.py [--archive DIR] [--config configs/demo.yaml]
        [--steps 100] [--rounds 2] [--pauses 0 5] [key=value ...]

Real pretraining runs (Ray Train + DeepSpeed, 2 workers, Ray Data decoding the archive) that
differ only in `data.executor_pause_ms` (raysys.data.pacing), alternated within each round
(the order flips every round) on one local Ray instance. Without `--archive` the demo archive
(600 entities) is built in a temporary folder. Per run: the seconds of `pretrain` (start-up,
training, export) and the training rate, the mean `samples_per_s` of metrics.jsonl after the
first two logs (start-up and warm-up left out); per pause: the means and their ratio to the
first pause's. The runs learn the same (the data depend on (seed, key, epoch) only): the last
logged loss is printed to show it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.config import load_config  # noqa: E402
from raysys.data.demo import make_demo_archive  # noqa: E402
from raysys.runtime import init_ray  # noqa: E402
from raysys.train.driver import pretrain  # noqa: E402


def one_run(config: str, archive: Path, out: Path, steps: int, pause: float,
            overrides: list[str]) -> dict[str, float]:
    cfg = load_config(config, [f"archive={archive}", f"out={out}", f"train.steps={steps}",
                               f"data.executor_pause_ms={pause}", *overrides])
    start = time.perf_counter()
    pretrain(cfg)
    seconds = time.perf_counter() - start
    logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in logs if "samples_per_s" in r]
    steady = logs[2:] or logs
    return {"seconds": seconds,
            "samples_per_s": sum(r["samples_per_s"] for r in steady) / len(steady),
            "loss": logs[-1]["loss"]}


def table(runs: dict[float, list[dict[str, float]]]) -> list[str]:
    base = None
    lines = ["| pause (ms) | run seconds | mean | samples/s | mean | ratio of samples/s | "
             "last loss |", "|---|---|---|---|---|---|---|"]
    for pause, got in runs.items():
        sec = [r["seconds"] for r in got]
        rate = [r["samples_per_s"] for r in got]
        losses = ", ".join(f"{r['loss']:.4f}" for r in got)
        mean_rate = sum(rate) / len(rate)
        base = base or mean_rate
        lines.append(f"| {pause:g} | {', '.join(f'{s:.0f}' for s in sec)} | "
                     f"{sum(sec) / len(sec):.0f} | {', '.join(f'{r:.1f}' for r in rate)} | "
                     f"{mean_rate:.1f} | {mean_rate / base:.2f} | {losses} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=Path, default=None)
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--pauses", type=float, nargs="+", default=[0.0, 5.0])
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pacing-"))
    archive = args.archive
    if archive is None:
        archive = work / "archive"
        make_demo_archive(str(archive), entities=600, seed=0)
    init_ray()
    runs: dict[float, list[dict[str, float]]] = {p: [] for p in args.pauses}
    for round_ in range(args.rounds):
        order = args.pauses if round_ % 2 == 0 else args.pauses[::-1]
        for pause in order:
            got = one_run(args.config, archive, work / f"r{round_}-{pause:g}", args.steps,
                          pause, args.overrides)
            runs[pause].append(got)
            print(f"round {round_}: pause {pause:g} ms -> {got['seconds']:.0f} s, "
                  f"{got['samples_per_s']:.1f} samples/s", flush=True)
    print("\n" + "\n".join(table(runs)))


if __name__ == "__main__":
    main()
