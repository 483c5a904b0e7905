"""Typed config of pretraining (`train.*`): workers, DeepSpeed, schedule, checkpoints, faults.

Checks that span sections (objective x train, model x objective) live in
`raysys.config_rules`, run by the root config's validator.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from raysys.config_base import AutoOrPositive, Section


class TrainConfig(Section):
    """How pretraining runs. One step = `grad_accum` micro-batches of `data.batch_size` entities
    on each of `num_workers` workers."""

    steps: int = Field(200, ge=1, description="optimizer steps of the whole run")
    num_workers: int = Field(2, ge=1, description="Ray Train workers (data-parallel ranks)")
    use_gpu: bool = Field(False, description="one GPU per worker (NCCL); False = CPU + gloo")
    cpus_per_worker: AutoOrPositive = Field(
        "auto", description="logical CPUs per worker; auto = min(1, cluster CPUs / (2 x "
        "workers)), resolved on the driver against the cluster (raysys.train.resources)"
    )
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage")
    precision: Literal["fp32", "bf16"] = "fp32"
    optimizer: Literal["adamw", "fused_adam"] = Field(
        "adamw", description="adamw = torch AdamW (CPU or GPU); fused_adam = DeepSpeed's (GPU)"
    )
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.98)
    warmup_steps: int = Field(20, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine floor as a fraction of lr")
    grad_clip: float = Field(1.0, ge=0, description="max global grad norm; 0 = off")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    log_every: int = Field(10, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    storage_path: str | None = Field(
        None, description="checkpoint storage (folder or s3://); None = <out>/checkpoints"
    )
    run_name: str = Field("raysys", min_length=1, description="fixed name: resubmitting resumes")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts; -1 = unlimited")
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="how Ray places the workers on nodes (SPREAD: one per node if able)"
    )
    storage_retries: int = Field(
        3, ge=0, description="retries of the storage probe before the run (exponential backoff)"
    )
    nonfinite: Literal["skip", "stop"] = Field(
        "skip",
        description="a micro-batch whose loss is NaN/inf is dropped (with grad_accum=1 the "
        "whole optimizer step is skipped: weights and optimizer state untouched) or stops the run",
    )
    max_skipped_steps: int = Field(
        10, ge=0, description="stop once more than this many micro-batches were skipped"
    )
    tensorboard: bool = True

    @field_validator("storage_path")
    @classmethod
    def _check_storage(cls, value: str | None) -> str | None:
        if value is not None:
            from raysys.data import fs

            fs.normalize(value)  # unsupported scheme / bucket-less URI -> ValueError
        return value

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.optimizer == "fused_adam" and not self.use_gpu:
            raise ValueError("optimizer: fused_adam needs train.use_gpu=true (CUDA only)")
        if self.warmup_steps >= self.steps and self.steps > 1:
            raise ValueError(
                f"warmup_steps ({self.warmup_steps}) must be smaller than steps ({self.steps})"
            )
        return self
