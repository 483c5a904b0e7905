"""Ray Data pipeline vs a plain torch DataLoader: same files, same decode + features, same workers.

    .venv/bin/python benchmarks/bench_data_pipeline.py                  # 256 entities x 2 epochs
    .venv/bin/python benchmarks/bench_data_pipeline.py --entities 512 --epochs 2 --rounds 5

Both sides run `raysys.data.rows.RowBuilder` (read bytes, decode audio/image, tabular windows,
two augmented views per modality, features) on the same plan rows, with `--workers` parallel
workers (Ray: decode tasks of 1 CPU each on a local instance with that many CPUs; DataLoader:
`num_workers` persistent processes), and hand out batches of `--batch-size` numpy arrays.

Start-up is reported separately, in two parts: the cold pass (Ray: `ray.init` + worker
processes importing torch; DataLoader: forking its workers) and, on every warm pass, the
latency to the first batch (Ray: planning and launching a new streaming execution; DataLoader:
filling its prefetch queue). Steady state is samples/s after the first batch of a warm pass,
measured the same way on both sides; whole-pass samples/s (first batch included) is reported
too. Rounds alternate Ray / DataLoader so that drift of a shared machine hits both; the ratio
is taken per round and the median reported.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")


class PlanDataset(torch.utils.data.Dataset):
    """Map-style dataset over plan rows; one entity per item through the same RowBuilder."""

    def __init__(self, plan, builder) -> None:
        self.plan, self.builder = plan, builder

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        out = self.builder(self.plan.iloc[i : i + 1])
        return {k: v[0] for k, v in out.items()}


def _collate(rows: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([r[k] for r in rows]) for k in rows[0]}


def _timed(batches) -> dict[str, float]:
    start = time.perf_counter()
    t_first, n, first_n = None, 0, 0
    for batch in batches:
        t_first = t_first or time.perf_counter()
        n += len(batch["key"])
        first_n = first_n or n
    end = time.perf_counter()
    total, t_first = end - start, t_first or end
    return {"first_batch_s": t_first - start, "samples": n, "seconds": total,
            "samples_per_s": n / max(total, 1e-9),
            "steady_samples_per_s": (n - first_n) / max(end - t_first, 1e-9)}


def run_ray(pipe, args) -> dict[str, float]:
    ds = pipe.dataset("all", epochs=args.epochs, diagnostics=False,
                      rows_per_task=args.rows_per_task)
    return _timed(ds.iter_batches(batch_size=args.batch_size, batch_format="numpy",
                                  prefetch_batches=2))


def make_loader(pipe, args) -> torch.utils.data.DataLoader:
    from raysys.data.rows import RowBuilder

    plan = pipe.plan("all", epochs=args.epochs).rows()
    builder = RowBuilder(pipe.cfg.model_copy(deep=True), pipe.stats, pipe.info.logs)
    return torch.utils.data.DataLoader(
        PlanDataset(plan, builder), batch_size=args.batch_size, num_workers=args.workers,
        collate_fn=_collate, prefetch_factor=2, persistent_workers=True,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archive", help="existing archive (default: build a demo archive)")
    p.add_argument("--entities", type=int, default=256)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rows-per-task", type=int, default=None,
                   help="entities per decode task (default: data.rows_per_task)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/data_pipeline.json")
    args = p.parse_args()

    from raysys.config import load_config
    from raysys.data.demo import make_demo_archive
    from raysys.data.pipeline import open_archive

    archive = args.archive
    if archive is None:
        archive = str(Path(tempfile.mkdtemp(prefix="raysys-bench-")) / "archive")
        make_demo_archive(archive, entities=args.entities, seed=0)
    t0 = time.perf_counter()
    from raysys.runtime import init_ray  # a private local instance

    init_ray(num_cpus=args.workers)
    ray_init_s = time.perf_counter() - t0
    pipe = open_archive(archive, load_config().data)
    loader = make_loader(pipe, args)
    cold = {"ray": run_ray(pipe, args), "dataloader": _timed(loader)}
    print(f"cold pass: ray init {ray_init_s:.1f}s + first batch "
          f"{cold['ray']['first_batch_s']:.1f}s; dataloader first batch "
          f"{cold['dataloader']['first_batch_s']:.1f}s")
    rounds = []
    for r in range(args.rounds):
        ray_res = run_ray(pipe, args)
        dl_res = _timed(loader)
        ratio = ray_res["steady_samples_per_s"] / dl_res["steady_samples_per_s"]
        whole = ray_res["samples_per_s"] / dl_res["samples_per_s"]
        rounds.append({"ray": ray_res, "dataloader": dl_res, "ratio": ratio,
                       "ratio_whole_pass": whole, "load_avg_1m": os.getloadavg()[0]})
        print(f"round {r}: steady ray {ray_res['steady_samples_per_s']:.1f}/s  dataloader "
              f"{dl_res['steady_samples_per_s']:.1f}/s  ratio {ratio:.2f} | first batch ray "
              f"{ray_res['first_batch_s']:.2f}s dataloader {dl_res['first_batch_s']:.2f}s | "
              f"whole pass ratio {whole:.2f} | load {os.getloadavg()[0]:.1f}", flush=True)
    result = {"archive": archive, "entities": len(pipe.entities), "args": vars(args),
              "ray_init_s": ray_init_s, "cold": cold, "rounds": rounds,
              "ratio_median": float(np.median([r["ratio"] for r in rounds])),
              "ratio_whole_pass_median": float(np.median([r["ratio_whole_pass"] for r in rounds])),
              "first_batch_s_median": {
                  side: float(np.median([r[side]["first_batch_s"] for r in rounds]))
                  for side in ("ray", "dataloader")},
              "load_avg_1m": os.getloadavg()[0], "cpus": os.cpu_count()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"ray init {ray_init_s:.1f}s; median steady ratio ray/dataloader "
          f"{result['ratio_median']:.2f} (whole passes {result['ratio_whole_pass_median']:.2f})")


if __name__ == "__main__":
    main()
