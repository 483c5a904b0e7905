"""Checkpoints: what is saved at step s, how it is restored, and how it is consolidated.

A checkpoint folder `step_{s:08d}` (merged by Ray Train from every rank's report) holds

    ds/step_{s:08d}/...      DeepSpeed: module, optimizer and LR-scheduler state, every rank's
                             ZeRO partition (zero_pp_rank_*), written by each rank
    rank_{r}.pt              per rank: step, torch/numpy/python RNG states, queue contents,
                             momentum-encoder weights, bad-record counts
    raysys.json              rank 0: step, stream position, the model signature (model config,
                             inputs, objective parameters, ZeRO layout), the full config

Restored on resume: model, optimizer, LR-schedule position, step, queue, momentum encoder, RNG
state, bad-record counts and the data stream position (the plan is deterministic, so the next
batch is exactly the one the uninterrupted run would have read). Not restored: Ray Data's
prefetch buffers (recomputed), wall-clock counters (samples/s restarts), metrics and
TensorBoard events past the step (dropped). See docs/training.md.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raysys.errors import UserError

META_FILE = "raysys.json"


def tag_of(step: int) -> str:
    return f"step_{step:08d}"


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


class IncompatibleCheckpoint(RuntimeError, UserError):
    """The checkpoint was written by a model of another shape; the message lists what differs."""


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += _diff(a.get(key), b.get(key), f"{prefix}{key}.")
        return out
    return [] if a == b else [f"{prefix.rstrip('.')}: checkpoint {a!r}, now {b!r}"]


def check_signature(saved: dict[str, Any], current: dict[str, Any], where: str) -> None:
    differences = _diff(saved, current)
    if differences:
        raise IncompatibleCheckpoint(
            f"checkpoint {where} was written by an incompatible model config:\n  "
            + "\n  ".join(differences)
        )


def save(directory: Path, *, engine: Any, step: int, rank: int, extra_state: dict[str, Any],
         meta: dict[str, Any] | None) -> None:
    """Write this rank's part of the checkpoint of `step` into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(directory / "ds"), tag=tag_of(step), save_latest=False)
    torch.save({"step": step, "rng": rng_state(), **extra_state}, directory / f"rank_{rank}.pt")
    if meta is not None:
        (directory / META_FILE).write_text(json.dumps({"step": step, **meta}, indent=1))


def load(directory: Path, *, engine: Any, rank: int, signature: dict[str, Any]
         ) -> tuple[int, dict[str, Any]]:
    """Restore engine state from `directory`; returns (step, this rank's extra state)."""
    meta = json.loads((directory / META_FILE).read_text())
    check_signature(meta["signature"], signature, str(directory))
    step = int(meta["step"])
    path, _ = engine.load_checkpoint(str(directory / "ds"), tag=tag_of(step),
                                     load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint {tag_of(step)} under {directory}/ds")
    rank_file = directory / f"rank_{rank}.pt"
    if not rank_file.exists():  # e.g. resumed with more workers than were saved
        rank_file = directory / "rank_0.pt"
    # Written by raysys itself (RNG tuples, numpy state): not loadable weights-only.
    state = torch.load(rank_file, weights_only=False)
    set_rng_state(state.pop("rng"))
    return step, state


def consolidated_state(directory: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """fp32 state dict of the training module from a merged checkpoint (any ZeRO stage)."""
    meta = json.loads((Path(directory) / META_FILE).read_text())
    step = int(meta["step"])
    ds_dir = Path(directory) / "ds"
    tag_dir = ds_dir / tag_of(step)
    if any(tag_dir.glob("*optim_states.pt")) and any(tag_dir.glob("zero_pp_rank_*")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        state = get_fp32_state_dict_from_zero_checkpoint(str(ds_dir), tag=tag_of(step))
    else:  # ZeRO stage 0: the module state file holds the full weights
        files = sorted(tag_dir.glob("mp_rank_*_model_states.pt"))
        state = torch.load(files[0], map_location="cpu", weights_only=False)["module"]
    return step, {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
