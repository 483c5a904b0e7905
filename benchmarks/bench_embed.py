"""`raysys embed` (Ray Data + actor pool) vs a plain single-process loop: embeddings/s.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_embed.py                # 128 entities
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_embed.py --entities 256 --rounds 2

Same model (a seeded export of configs/tiny.yaml's model), same preprocessing code
(`raysys.embed.preprocess.Preprocessor`), same inference code (`EmbedCore`), same files.
The plain loop runs both in this process, batch after batch (`raysys.embed.reference`), with
`--plain-threads` torch threads for inference. Ray runs `run_embed` on a local instance with
`--cpus` CPUs, with 1 and with 2 actors (0.5 CPU each, preprocessing tasks 0.5 CPU each).

Reported per side: embeddings/s in steady state (Ray: first output batch to the last, i.e.
without `ray.init` and actor start-up; plain: the whole loop, which has no start-up beyond
loading the model) and Ray's whole-run figure (planning, actor start-up and writing included).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def make_inputs(root: Path, entities: int) -> tuple[str, str]:
    from raysys.config import load_config
    from raysys.data.demo import make_demo_archive
    from raysys.embed.reference import random_export

    archive, model = str(root / "archive"), str(root / "model")
    make_demo_archive(archive, entities=entities, seed=0, missing_fraction=0.1)
    cfg = load_config("configs/tiny.yaml", [])
    random_export(archive, model, cfg.data, cfg.model, seed=0)
    return archive, model


def run_plain(model: str, archive: str, threads: int) -> dict:
    from raysys.embed.reference import plain_embed

    start = time.perf_counter()
    rows = len(plain_embed(model, archive, torch_threads=threads))
    seconds = time.perf_counter() - start
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_s": round(rows / seconds, 1)}


def run_ray(model: str, archive: str, out: Path, actors: int, rows_per_task: int) -> dict:
    from raysys.embed import EmbedConfig, run_embed

    shutil.rmtree(out, ignore_errors=True)
    cfg = EmbedConfig(actors=actors, decode_cpus=0.5, cpus_per_actor=0.5, shard_entities=32,
                      rows_per_task=rows_per_task, progress_every_s=60)
    s = run_embed(model, archive, str(out), cfg)
    return {"rows": s["rows_embedded"], "seconds": s["seconds"],
            "stream_seconds": s["stream_seconds"], "rows_per_s": s["rows_per_s"],
            "whole_run_rows_per_s": round(s["rows_embedded"] / s["seconds"], 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entities", type=int, default=128)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--plain-threads", type=int, default=1)
    p.add_argument("--actors", default="1,2",
                   help="actor counts to run, comma-separated (2 is needed for the ratios)")
    p.add_argument("--rows-per-task", type=int, default=None,
                   help="embed.rows_per_task (default: EmbedConfig's)")
    p.add_argument("--out", default="benchmarks/results/bench_embed.json")
    args = p.parse_args()
    import ray

    from raysys.runtime import quiet_ray_data

    with tempfile.TemporaryDirectory(prefix="bench-embed-") as tmp:
        root = Path(tmp)
        archive, model = make_inputs(root, args.entities)
        # our own instance (a bare ray.init() would join a cluster started with `ray start`)
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False,
                 logging_level=logging.WARNING)
        quiet_ray_data()
        from raysys.embed import EmbedConfig

        rows_per_task = args.rows_per_task or EmbedConfig().rows_per_task
        results: list[dict] = []
        for r in range(args.rounds):  # alternate sides so drift of a shared machine hits both
            one = {"round": r, "plain": run_plain(model, archive, args.plain_threads)}
            for actors in [int(a) for a in args.actors.split(",")]:
                one[f"ray_{actors}_actors"] = run_ray(model, archive, root / f"out{actors}",
                                                      actors, rows_per_task)
            one["speedup_2_actors_vs_plain"] = round(
                one["ray_2_actors"]["rows_per_s"] / one["plain"]["rows_per_s"], 2)
            one["whole_run_speedup_2_actors_vs_plain"] = round(
                one["ray_2_actors"]["whole_run_rows_per_s"] / one["plain"]["rows_per_s"], 2)
            if "ray_1_actors" in one:
                one["speedup_2_vs_1_actor"] = round(
                    one["ray_2_actors"]["rows_per_s"] / one["ray_1_actors"]["rows_per_s"], 2)
            print(json.dumps(one), flush=True)
            results.append(one)
    payload = {"entities": args.entities, "cpus": args.cpus, "plain_threads": args.plain_threads,
               "rows_per_task": rows_per_task, "rounds": results}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
