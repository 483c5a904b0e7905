"""Trainer overhead: raysys pretraining steps (Ray Train + DeepSpeed) vs a bare DDP loop.

    .venv/bin/python benchmarks/bench_train_overhead.py                 # configs/demo.yaml
    .venv/bin/python benchmarks/bench_train_overhead.py --steps 30 --rounds 3 \\
        --set train.zero_stage=0

Both sides train the same model (`MultiViewModel` + `ContrastiveObjective` in `TrainModule`,
same seed, same initial weights) on the same in-memory micro-batches, with 2 ranks on gloo:

* raysys: a `TorchTrainer` (the worker resources of `raysys.train.driver.build_trainer`) whose
  workers build the real `raysys.train.loop.Trainer` (DeepSpeed engine from `deepspeed_setup`,
  embedding queue, non-finite guard, term logging) and time its `optimizer_step`. The only
  difference to a pretraining run is the data source: `InMemoryTrainer` overrides
  `Trainer.batches()` to cycle through the pre-built batches, so no Ray Data runs and the
  comparison measures the trainer, not the pipeline. Checkpoints are not written.
* baseline: `torch.multiprocessing` + `DistributedDataParallel`, torch AdamW with the same
  warm-up/cosine schedule, the same gradient clipping, the same embedding queue and momentum
  key encoder (EMA after each step, keys re-encoded for the queue as raysys does) and the
  same running embedding centre update.
* with `--split`, the same raysys `Trainer` without Ray (torch.multiprocessing + gloo): the
  ratio raysys / no-Ray is Ray's share of the gap, no-Ray / DDP the Trainer's + DeepSpeed's.

The micro-batches are materialised once with the raysys pipeline (each rank's exact shard) and
saved with numpy; both sides load them into memory before timing. Each round runs both sides
(Ray first, then DDP; the order alternates between rounds); samples/s is measured over the
steps after `--warmup` and start-up (process start, model build, DeepSpeed init) is reported
separately.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")


# -- the in-memory batches ----------------------------------------------------------------------

def materialise(pipe: Any, cfg: Any, n: int, folder: Path) -> None:
    """Save `n` micro-batches per rank (the rank's exact shard of the plan) as .npz files."""
    micro, world = cfg.data.batch_size, cfg.train.num_workers
    rows = n * micro * world
    epochs = math.ceil(rows / len(pipe.entities.select("train")))
    for rank in range(world):
        ds = pipe.dataset("train", epochs=epochs, stop=rows, shard=(rank, world, micro),
                          diagnostics=False)
        batches = ds.iter_batches(batch_size=micro, batch_format="numpy", drop_last=True)
        for i, batch in enumerate(batches):
            arrays = {k: np.asarray(v) for k, v in batch.items()}
            arrays["key"] = arrays["key"].astype(str)  # no pickled objects in the files
            np.savez(folder / f"rank{rank}_{i:04d}.npz", **arrays)


def load_batches(folder: str, rank: int) -> list[Any]:
    from raysys.data.batch import HeteroBatch

    files = sorted(Path(folder).glob(f"rank{rank}_*.npz"))
    return [HeteroBatch.from_numpy(dict(np.load(f))) for f in files]


def _timings(step_s: list[float], global_batch: int, ready_at: float) -> dict[str, Any]:
    total = sum(step_s)
    return {"steps": len(step_s), "seconds": total, "step_s_median": float(np.median(step_s)),
            "samples_per_s": len(step_s) * global_batch / max(total, 1e-9),
            "ready_at": ready_at}


# -- raysys side: the real Trainer inside Ray Train -----------------------------------------------

def time_trainer(config: dict[str, Any], rank: int, world: int) -> None:
    """The raysys Trainer stepping through in-memory batches; rank 0 writes the timings."""
    from raysys.config import RaysysConfig
    from raysys.train.loop import StepStats, Trainer

    class InMemoryTrainer(Trainer):
        """The raysys Trainer with `batches()` replaced by pre-materialised batches."""

        def __init__(self, *args: Any, batches: list[Any]) -> None:
            super().__init__(*args)
            self._memory = batches

        def batches(self):
            return itertools.cycle(self._memory)

    torch.set_num_threads(config["threads"])
    cfg = RaysysConfig.model_validate(config["cfg"])
    trainer = InMemoryTrainer(cfg, config["pipeline"], rank, world,
                              batches=load_batches(config["folder"], rank))
    it, stats = trainer.batches(), StepStats()
    ready_at = time.time()
    step_s = []
    for i in range(config["warmup"] + config["steps"]):
        t0 = time.perf_counter()
        trainer.optimizer_step(it, stats)
        if i >= config["warmup"]:
            step_s.append(time.perf_counter() - t0)
    if rank == 0:
        result = _timings(step_s, trainer.global_batch, ready_at)
        result["torch_threads"] = torch.get_num_threads()
        Path(config["result"]).write_text(json.dumps(result))


def ray_worker(config: dict[str, Any]) -> None:
    """Ray Train worker: `time_trainer` in the worker group's process group."""
    import ray.train

    ctx = ray.train.get_context()
    time_trainer(config, ctx.get_world_rank(), ctx.get_world_size())


def trainer_config(cfg: Any, pipe: Any, folder: str, args: argparse.Namespace,
                   result: Path) -> dict[str, Any]:
    return {"cfg": cfg.model_dump(mode="json"), "pipeline": pipe, "folder": folder,
            "warmup": args.warmup, "steps": args.steps, "threads": args.threads,
            "result": str(result)}


def run_ray(cfg: Any, pipe: Any, folder: str, args: argparse.Namespace) -> dict[str, Any]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    result_file = Path(folder) / "ray_result.json"
    t = cfg.train
    trainer = TorchTrainer(
        ray_worker,
        train_loop_config=trainer_config(cfg, pipe, folder, args, result_file),
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=t.num_workers,
                                     resources_per_worker={"CPU": t.cpus_per_worker}),
        run_config=RunConfig(name=f"overhead-{time.time_ns()}",
                             storage_path=str(Path(folder) / "ray_storage")),
    )
    started = time.time()
    trainer.fit()
    out = json.loads(result_file.read_text())
    out["startup_s"] = out.pop("ready_at") - started
    return out


# -- the same Trainer without Ray: splits Ray's share of the gap from DeepSpeed's ----------------

def plain_trainer_worker(rank: int, world: int, port: int, config: dict[str, Any]) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    time_trainer(config, rank, world)
    dist.destroy_process_group()


def run_plain_trainer(cfg: Any, pipe: Any, folder: str, args: argparse.Namespace) -> dict:
    result_file = Path(folder) / "plain_trainer_result.json"
    started = time.time()
    torch.multiprocessing.spawn(
        plain_trainer_worker, nprocs=cfg.train.num_workers, join=True,
        args=(cfg.train.num_workers, _free_port(),
              trainer_config(cfg, pipe, folder, args, result_file)),
    )
    out = json.loads(result_file.read_text())
    out["startup_s"] = out.pop("ready_at") - started
    return out


# -- baseline: bare DDP ---------------------------------------------------------------------------

def ddp_worker(rank: int, world: int, port: int, cfg_json: dict, inputs: Any, folder: str,
               args: dict[str, Any], started: float) -> None:
    """One DDP rank: same module, optimizer, schedule, clipping and queue as raysys."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from raysys.config import RaysysConfig
    from raysys.models.multimodal import MultiViewModel
    from raysys.objectives.multiview import Negatives
    from raysys.objectives.negatives.queue import EmbeddingQueue, MomentumEncoder
    from raysys.objectives.objective import ContrastiveObjective
    from raysys.train.deepspeed_setup import make_optimizer, warmup_cosine
    from raysys.train.module import TrainModule, cast_batch

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(args["threads"])
    cfg = RaysysConfig.model_validate(cfg_json)
    torch.manual_seed(cfg.seed)
    model = MultiViewModel(cfg.model, inputs)
    neg = cfg.objective.negatives
    key_encoder = MomentumEncoder(model) if neg.momentum is not None else None
    module = TrainModule(model, ContrastiveObjective(cfg.objective, cfg.model.embed_dim))
    ddp = DistributedDataParallel(module, find_unused_parameters=args["find_unused"])
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = make_optimizer(cfg.train, params)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg.train))
    queue = EmbeddingQueue(neg.queue_size, cfg.model.embed_dim) if neg.queue_size else None
    batches = itertools.cycle(load_batches(folder, rank))
    ready_at = time.time()
    step_s = []
    for i in range(args["warmup"] + args["steps"]):
        t0 = time.perf_counter()
        batch = cast_batch(next(batches), torch.float32, torch.device("cpu"))
        negatives = (Negatives(keys=queue.negatives(), ids=queue.negative_ids())
                     if queue is not None and len(queue) else None)
        out, encoded = ddp(batch, negatives)
        out["loss"].backward()
        model.update_centre(encoded)  # running embedding means, all-reduced (as raysys)
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if queue is not None:  # keys of this batch, then the EMA update (raysys' order)
            with torch.no_grad():
                if key_encoder is not None:
                    encoded = key_encoder(batch)
                emb, present = encoded.embeddings["invariant"].float(), encoded.present
                ids = encoded.entity_id.unsqueeze(1).expand_as(present)
                queue.enqueue(emb[present], ids[present])
        if key_encoder is not None:
            key_encoder.update(model, neg.momentum)
        if i >= args["warmup"]:
            step_s.append(time.perf_counter() - t0)
    if rank == 0:
        result = _timings(step_s, cfg.data.batch_size * world, ready_at)
        result["startup_s"] = result.pop("ready_at") - started
        result["torch_threads"] = torch.get_num_threads()
        Path(folder, "ddp_result.json").write_text(json.dumps(result))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp(cfg: Any, inputs: Any, folder: str, args: argparse.Namespace) -> dict[str, Any]:
    world = cfg.train.num_workers
    options = {"warmup": args.warmup, "steps": args.steps, "threads": args.threads,
               "find_unused": args.find_unused}
    torch.multiprocessing.spawn(
        ddp_worker, nprocs=world, join=True,
        args=(world, _free_port(), cfg.model_dump(mode="json"), inputs, folder, options,
              time.time()),
    )
    return json.loads(Path(folder, "ddp_result.json").read_text())


# -- driver ---------------------------------------------------------------------------------------

def check_supported(cfg: Any) -> None:
    """Fail fast on settings the DDP baseline does not reproduce (the comparison would lie)."""
    t = cfg.train
    if t.grad_accum != 1:
        raise ValueError("train.grad_accum must be 1 for this benchmark (baseline has none)")
    if t.precision != "fp32":
        raise ValueError("train.precision must be fp32 for this benchmark (baseline is fp32)")
    if t.use_gpu:
        raise ValueError("train.use_gpu: this benchmark compares CPU/gloo runs")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--set", nargs="*", default=[], help="dotted overrides, e.g. train.zero_stage=0")
    p.add_argument("--archive", help="existing archive (default: build a demo archive)")
    p.add_argument("--entities", type=int, default=128)
    p.add_argument("--batches", type=int, default=8, help="distinct micro-batches per rank")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per rank, both sides")
    p.add_argument("--split", action="store_true",
                   help="also run the raysys Trainer without Ray (torch.multiprocessing + gloo) "
                        "to split the gap into Ray's share and the Trainer/DeepSpeed share")
    p.add_argument("--find-unused", action="store_true", help="DDP find_unused_parameters")
    p.add_argument("--out", default="benchmarks/results/train_overhead.json")
    args = p.parse_args()

    from raysys.config import load_config
    from raysys.data.demo import make_demo_archive
    from raysys.data.pipeline import open_archive
    from raysys.train.loop import model_inputs

    cfg = load_config(args.config, args.set)
    check_supported(cfg)
    work = Path(tempfile.mkdtemp(prefix="raysys-overhead-"))
    archive = args.archive or str(work / "archive")
    if args.archive is None:
        make_demo_archive(archive, entities=args.entities, seed=0)
    from raysys.runtime import init_ray  # a private local instance

    init_ray(num_cpus=os.cpu_count())
    pipe = open_archive(archive, cfg.data)
    pipe._logs_handle()  # as build_trainer does: the logs go to the object store once
    folder = work / "batches"
    folder.mkdir()
    materialise(pipe, cfg, args.batches, folder)
    inputs = model_inputs(cfg, pipe)
    rounds = []
    for r in range(args.rounds):
        sides = [("ray", lambda: run_ray(cfg, pipe, str(folder), args)),
                 ("ddp", lambda: run_ddp(cfg, inputs, str(folder), args))]
        if args.split:
            sides.insert(1, ("trainer_no_ray",
                             lambda: run_plain_trainer(cfg, pipe, str(folder), args)))
        res = dict((name, fn()) for name, fn in (sides if r % 2 == 0 else sides[::-1]))
        rate = {name: res[name]["samples_per_s"] for name, _ in sides}
        res["ratio"] = rate["ray"] / rate["ddp"]
        if args.split:
            res["ratio_ray_vs_no_ray"] = rate["ray"] / rate["trainer_no_ray"]
            res["ratio_no_ray_vs_ddp"] = rate["trainer_no_ray"] / rate["ddp"]
        res["load_avg_1m"] = os.getloadavg()[0]
        rounds.append(res)
        line = "  ".join(f"{name} {rate[name]:.1f}/s (start-up {res[name]['startup_s']:.1f}s)"
                         for name, _ in sides)
        print(f"round {r}: {line}  ratio {res['ratio']:.2f}  load {res['load_avg_1m']:.1f}",
              flush=True)
    result = {"config": args.config, "overrides": args.set, "args": vars(args),
              "global_batch": cfg.data.batch_size * cfg.train.num_workers,
              "zero_stage": cfg.train.zero_stage, "rounds": rounds, "cpus": os.cpu_count(),
              "ratio_median": float(np.median([r["ratio"] for r in rounds]))}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"median ratio raysys/ddp {result['ratio_median']:.2f}")


if __name__ == "__main__":
    main()
