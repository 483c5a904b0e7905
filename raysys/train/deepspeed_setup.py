"""DeepSpeed config, optimizer and LR schedule from `TrainConfig`."""

from __future__ import annotations

import math
from typing import Any

import torch

from raysys.train.config import TrainConfig


def deepspeed_config(cfg: TrainConfig, micro_batch: int, world_size: int,
                     micro_steps: int = 1) -> dict[str, Any]:
    """The DeepSpeed JSON config: ZeRO stage, precision, clipping, accumulation.

    `micro_steps`: DeepSpeed micro-steps per trainer micro-batch (gradient caching runs
    one per sub-batch, `raysys.train.module.micro_steps_per_batch`); the accumulation window is
    `grad_accum * micro_steps` of them. DeepSpeed's own sample counters then count each
    micro-batch `micro_steps` times; raysys counts samples itself."""
    gas = cfg.grad_accum * micro_steps
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": gas,
        "train_batch_size": micro_batch * gas * world_size,
        "zero_optimization": {"stage": cfg.zero_stage},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "steps_per_print": 10**9,  # raysys logs its own metrics
        "wall_clock_breakdown": False,
        "zero_allow_untested_optimizer": True,
    }
    if cfg.grad_clip > 0:
        config["gradient_clipping"] = cfg.grad_clip
    return config


def warmup_cosine(cfg: TrainConfig):
    """LR multiplier: linear warm-up to 1, then cosine down to `min_lr_ratio` at `steps`."""

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        span = max(cfg.steps - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    """torch AdamW (CPU and GPU) or DeepSpeed's FusedAdam (CUDA only)."""
    if cfg.optimizer == "fused_adam":
        from deepspeed.ops.adam import FusedAdam

        return FusedAdam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)


def initialize(module: torch.nn.Module, cfg: TrainConfig, micro_batch: int, world_size: int,
               micro_steps: int = 1):
    """`deepspeed.initialize` with our optimizer and schedule -> (engine, optimizer, scheduler)."""
    import deepspeed

    optimizer = make_optimizer(cfg, [p for p in module.parameters() if p.requires_grad])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(cfg))
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=module,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=deepspeed_config(cfg, micro_batch, world_size, micro_steps),
    )
    return engine, optimizer, scheduler
