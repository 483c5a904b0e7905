"""Gradient caching inside the DeepSpeed trainer (real Ray Train, 2 CPU workers, gloo).

The reference is the plain step of the same `Trainer` on the same micro-batches: the gradients
the optimizer receives (every rank's ZeRO partition, captured by a torch `step_pre_hook` on the
inner AdamW) must agree within fp32 tolerance, and the weights after two steps up to a few
sign flips of Adam's update, for ZeRO 0-3 and with `train.grad_accum=2`. The objective uses
every pool feature and the objective's parameters (the COLA matrix and a learnable
temperature, whose gradients ride on the first sub-batch's micro-step): gather, a queue fed by
a momentum encoder (non-empty from the second step), ListNet, a LOEV head, COLA. (The learnable
temperature also covers DeepSpeed's start-up broadcast with 2 workers, which failed while
`log_tau` was 0-d.) Gradient clipping is off: clipping, like Adam's first step, would hide a wrong
gradient scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from raysys.config import RaysysConfig, load_config

pytestmark = pytest.mark.slow

SUB_BATCH = 3  # tiny.yaml micro-batch is 8 entities: sub-batches of 3, 3, 2
OBJECTIVE = [
    "model.loev_heads=[pitch_shift]", "model.cola=true",
    "objective.w_cont=0.5", "objective.cola=true",
    "objective.loev.enabled=true", "objective.loev.augmentations=[pitch_shift]",
    "objective.negatives.gather=true", "objective.negatives.queue_size=64",
    "objective.negatives.momentum=0.9", "objective.learnable_temperature=true",
    "train.grad_clip=0", "data.max_bad_fraction=0.2",
]
# (zero_stage, grad_accum)
CASES = [(3, 1), (0, 1), (1, 1), (2, 1), (2, 2)]
STEPS = 2  # optimizer steps per case: the second one scores against the queue
LR = 1e-3  # configs/tiny.yaml (train.lr default)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    from raysys.data.demo import make_demo_archive

    root = tmp_path_factory.mktemp("gc") / "archive"
    make_demo_archive(str(root), entities=48, seed=3, missing_fraction=0.1)
    return str(root)


def tiny(archive: str, out: Path, *overrides: str) -> RaysysConfig:
    return load_config("configs/tiny.yaml", [f"archive={archive}", f"out={out}", *OBJECTIVE,
                                             *overrides])


def variant(cfg: dict[str, Any], stage: int, accum: int, sub_batch: int | None) -> RaysysConfig:
    cfg = json.loads(json.dumps(cfg))
    cfg["train"].update(zero_stage=stage, grad_accum=accum,
                        nonfinite="stop" if accum > 1 else "skip")
    cfg["objective"]["negatives"]["grad_cache_sub_batch"] = sub_batch
    return RaysysConfig.model_validate(cfg)


def full_fp32(param: torch.nn.Parameter) -> torch.Tensor:
    """The whole fp32 master value of a parameter under any ZeRO stage (stage 0: itself)."""
    from deepspeed.utils import safe_get_full_fp32_param

    full = safe_get_full_fp32_param(param)
    return (param if full is None else full).detach().clone()


def one_case(cfg: RaysysConfig, pipe: Any, batches: list, rank: int, world: int) -> dict:
    """`STEPS` optimizer steps of a fresh Trainer on `batches`: the flat gradients the inner
    optimizer is handed at each of its steps (this rank's partition; ZeRO-3 steps once per
    sub-group), the full fp32 parameters afterwards and the loss terms."""
    from raysys.train.loop import StepStats, Trainer

    trainer = Trainer(cfg, pipe, rank, world)
    inner = trainer.scheduler.optimizer  # the torch AdamW that DeepSpeed steps
    grads: list[torch.Tensor] = []

    def capture(opt, args, kwargs) -> None:
        grads.append(torch.cat([p.grad.detach().flatten().clone()
                                for g in opt.param_groups for p in g["params"]
                                if p.grad is not None]))

    inner.register_step_pre_hook(capture)
    it, stats = iter(batches), StepStats()
    for _ in range(STEPS):
        trainer.optimizer_step(it, stats)
    params = torch.cat([full_fp32(p).flatten() for p in trainer.module.parameters()])
    return {"grads": grads, "params": params, "queue": len(trainer.queue),
            "stepper": type(trainer.stepper).__name__,
            "terms": {k: v for k, v in stats.terms.items() if not k.startswith("pool/")}}


def compare_worker(config: dict[str, Any]) -> None:
    import ray.train

    from raysys.train.loop import Trainer

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    pipe, base = config["pipeline"], config["cfg"]
    first = variant(base, 2, 2, None)
    it = Trainer(first, pipe, rank, world).batches()
    batches = [next(it) for _ in range(STEPS * 2)]
    results = {}
    for stage, accum in CASES:
        for sub in (None, SUB_BATCH):
            case = one_case(variant(base, stage, accum, sub), pipe, batches, rank, world)
            results[f"z{stage}-ga{accum}-{'gc' if sub else 'plain'}"] = case
    torch.save(results, Path(config["out"]) / f"rank{rank}.pt")


def run_workers(fn, cfg: RaysysConfig, out: Path) -> list[dict]:
    import sys

    from ray import cloudpickle
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from raysys.data.pipeline import open_archive

    # the workers cannot import this test module: ship its functions by value
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    pipe = open_archive(cfg.archive, cfg.data)
    trainer = TorchTrainer(
        fn, train_loop_config={"cfg": cfg.model_dump(mode="json"), "pipeline": pipe,
                               "out": str(out)},
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name="gc-compare", storage_path=str(out / "ray")),
    )
    trainer.fit()
    return [torch.load(out / f"rank{r}.pt") for r in range(2)]


def test_grad_cache_step_equals_plain_step_zero_0_to_3(ray_session, archive, tmp_path):
    cfg = tiny(archive, tmp_path / "run")
    ranks = run_workers(compare_worker, cfg, tmp_path)
    for rank, results in enumerate(ranks):
        for stage, accum in CASES:
            plain = results[f"z{stage}-ga{accum}-plain"]
            cached = results[f"z{stage}-ga{accum}-gc"]
            where = f"rank {rank}, ZeRO-{stage}, grad_accum={accum}"
            assert len(plain["grads"]) == len(cached["grads"]) >= STEPS, where
            assert plain["queue"] == cached["queue"] > 0, where
            assert (plain["stepper"], cached["stepper"]) == ("PlainStep", "GradCacheStep")
            for step, (g_plain, g_cached) in enumerate(
                    zip(plain["grads"], cached["grads"], strict=True)):
                assert g_plain.norm() > 0, where
                # the first step starts from identical weights: fp32 summation order only.
                # Later ones start from weights one Adam step apart, and Adam turns summation
                # noise in a near-zero gradient element into an update of up to lr.
                first = step < len(plain["grads"]) // STEPS
                torch.testing.assert_close(g_cached, g_plain, rtol=1e-4 if first else 1e-3,
                                           atol=1e-6 if first else 1e-4,
                                           msg=lambda m, s=step, w=where: f"{w} step {s}: {m}")
            diff = (cached["params"] - plain["params"]).abs()
            assert diff.max() <= 2.5 * LR, where  # at most a few sign flips of Adam's update
            assert (diff > 1e-6).float().mean() < 0.01, where
            assert cached["terms"].keys() == plain["terms"].keys(), where
            for name, values in plain["terms"].items():
                assert cached["terms"][name] == pytest.approx(values, rel=1e-4, abs=1e-6), name


def test_pretrain_with_grad_cache_logs_metrics(ray_session, archive, tmp_path):
    from raysys.train.driver import pretrain

    cfg = tiny(archive, tmp_path / "run", "train.steps=3", "train.warmup_steps=1",
               "train.log_every=1", "train.checkpoint_every=3", "train.zero_stage=3",
               f"objective.negatives.grad_cache_sub_batch={SUB_BATCH}")
    summary = pretrain(cfg)
    assert summary["steps"] == 3
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert all(r[k] is not None for k in ("loss", "binary", "continuous", "loev", "cola"))
        assert r["samples_per_s"] > 0 and r["peak_memory_mib"] > 0
    assert records[-1]["queue_size"] > 0
    assert (tmp_path / "run" / "model" / "model.pt").exists()
