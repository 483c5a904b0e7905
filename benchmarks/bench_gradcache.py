"""Peak memory of one training step at a large micro-batch: plain vs gradient caching.

    .venv/bin/python benchmarks/bench_gradcache.py                       # tiny model, B = 256
    .venv/bin/python benchmarks/bench_gradcache.py --batch 512 --sub-batch 32 \\
        --set train.zero_stage=3
    .venv/bin/python benchmarks/bench_gradcache.py --device cuda --batch 2048   # GPU

Both modes run the shipped step (`raysys.train.module.PlainStep` / `GradCacheStep`) on the
same DeepSpeed engine setup (`deepspeed_setup.initialize`, one rank, gloo or NCCL), the same
`MultiViewModel` + `ContrastiveObjective` (configs/tiny.yaml plus `--set` overrides; the
objective terms of configs/demo.yaml: binary, ListNet, a LOEV head) and the same synthetic
micro-batch of `--batch` entities (every modality present, 2 views each, graded-relevance lists
of 8 in-batch candidates). Each mode runs in a fresh subprocess: memory = peak growth over
the baseline taken after the engine and the batch exist (CPU: peak RSS from `getrusage`;
CUDA: `max_memory_allocated`); it includes the optimizer's first-step state, the same in both
modes and small next to the activations (the tiny model has ~0.25 M parameters). Time = one
step (forward, backward, optimizer step). Prints a table and writes
benchmarks/results/gradcache.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

MIB = 1024**2
OBJECTIVE = ["model.loev_heads=[pitch_shift]", "objective.w_cont=0.5",
             "objective.loev.enabled=true", "objective.loev.augmentations=[pitch_shift]"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def synthetic_batch(cfg: Any, inputs: Any, b: int, seed: int) -> Any:
    """A micro-batch of `b` entities shaped as the pipeline would deliver it (random values)."""
    from raysys.data.batch import HeteroBatch, ModalityViews

    g = torch.Generator().manual_seed(seed)
    v, w, fn = cfg.data.views_per_modality, inputs.tabular_window, inputs.tabular_num_features
    frames = max(8, int(cfg.data.clip_seconds * cfg.data.sample_rate
                        / cfg.data.audio.hop_length))
    hw = cfg.data.image_size
    every = torch.ones(b, dtype=torch.bool)
    pitch = {"applied": torch.rand(b, v, generator=g) > 0.5, "semitones": torch.randn(b, v)}
    tab = {"tabular_num": torch.randn(b, v, w, fn, generator=g),
           "tabular_num_mask": torch.rand(b, v, w, fn, generator=g) > 0.2,
           "tabular_cat": torch.stack([torch.randint(0, c, (b, v, w), generator=g)
                                       for c in inputs.tabular_cardinalities], dim=-1),
           "tabular_row_mask": torch.rand(b, v, w, generator=g) > 0.3}
    views = {"audio": ModalityViews(torch.randn(b, v, inputs.audio_channels,
                                                cfg.data.audio.n_bins, frames, generator=g),
                                    every.clone(), aug={"pitch_shift": pitch}),
             "image": ModalityViews(torch.randn(b, v, 3, hw, hw, generator=g), every.clone()),
             "tabular": ModalityViews(tab, every.clone())}
    ids = torch.arange(b) * 7 + 1
    k = 8
    cand = torch.randint(0, b, (b, k), generator=g)
    return HeteroBatch(
        [f"k{i}" for i in range(b)], ids, views, relevance_entity_id=ids[cand],
        relevance=torch.rand(b, k, generator=g) * 100, relevance_mask=torch.ones(b, k).bool(),
        relevance_query_view=torch.zeros(b, k, dtype=torch.int8),
        relevance_candidate_view=torch.zeros(b, k, dtype=torch.int8),
    )  # fmt: skip


def _peak_bytes(device: str) -> int:
    if device == "cuda":
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def child(args: argparse.Namespace) -> dict:
    """One mode in this fresh process: build the engine and the batch, measure one step."""
    import deepspeed

    from raysys.config import load_config
    from raysys.models.multimodal import ModelInputs, MultiViewModel
    from raysys.objectives.objective import ContrastiveObjective
    from raysys.train.deepspeed_setup import initialize
    from raysys.train.module import TrainModule, cast_batch, make_step, micro_steps_per_batch

    torch.set_num_threads(args.threads)
    sub = args.sub_batch if args.mode == "gradcache" else None
    cfg = load_config(args.config, [*OBJECTIVE, *args.set, f"data.batch_size={args.batch}",
                                    f"objective.negatives.grad_cache_sub_batch={sub}"
                                    if sub else "objective.negatives.grad_cache_sub_batch=null",
                                    f"train.use_gpu={args.device == 'cuda'}"])
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(free_port()))
    deepspeed.init_distributed(dist_backend="nccl" if args.device == "cuda" else "gloo")
    torch.manual_seed(0)
    inputs = ModelInputs.from_data(cfg.data, 4, (6, 9))
    module = TrainModule(MultiViewModel(cfg.model, inputs),
                         ContrastiveObjective(cfg.objective, cfg.model.embed_dim))
    neg = cfg.objective.negatives
    engine, _, _ = initialize(module, cfg.train, args.batch, 1,
                              micro_steps_per_batch(neg, args.batch))
    device, dtype = engine.device, torch.bfloat16 if cfg.train.precision == "bf16" else None
    step = make_step(engine, neg, 1)
    batch = cast_batch(synthetic_batch(cfg, inputs, args.batch, 0), dtype or torch.float32,
                       device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated() if device.type == "cuda" else _peak_bytes("cpu")
    start = time.perf_counter()
    out, _ = step.forward(batch, None)
    step.backward(out)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {"mode": args.mode, "batch": args.batch, "sub_batch": sub, "seconds": seconds,
            "loss": float(out["loss"]), "peak_extra_bytes": _peak_bytes(device.type) - baseline}


def measure(args: argparse.Namespace, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--batch", str(args.batch),
           "--sub-batch", str(args.sub_batch), "--config", args.config, "--device", args.device,
           "--threads", str(args.threads), "--set", *args.set]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {"mode": mode, "failed": done.stderr.strip()[-1500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=256, help="entities in the micro-batch")
    p.add_argument("--sub-batch", type=int, default=16, help="grad_cache_sub_batch")
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--set", nargs="*", default=[], help="dotted config overrides")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--timeout", type=int, default=300)
    p.add_argument("--out", default="benchmarks/results/gradcache.json")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="plain", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    results = [measure(args, mode) for mode in ("plain", "gradcache")]
    for r in results:
        if "failed" in r:
            raise SystemExit(f"{r['mode']} failed:\n{r['failed']}")
    plain, cached = results
    ratio = cached["peak_extra_bytes"] / max(plain["peak_extra_bytes"], 1)
    print(f"micro-batch {args.batch} entities, device {args.device}, config {args.config} "
          f"{' '.join(args.set)}")
    print("| mode | sub-batch | peak extra MiB | step s | loss |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['mode']} | {r['sub_batch'] or '-'} | {r['peak_extra_bytes'] / MIB:.0f} | "
              f"{r['seconds']:.2f} | {r['loss']:.5f} |")
    print(f"memory ratio gradcache / plain: {ratio:.3f}; time ratio: "
          f"{cached['seconds'] / plain['seconds']:.2f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"args": vars(args), "results": results,
                                          "memory_ratio": ratio,
                                          "load": os.getloadavg()[0]}, indent=1))


if __name__ == "__main__":
    main()
