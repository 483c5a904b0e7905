"""Metrics of a run: `RUN/metrics.jsonl` (one JSON object per logged step), TensorBoard event
files under `RUN/tensorboard/`, and a one-line live progress display on the console.

Every record carries `step` and `time` (wall clock, Unix seconds). Rank 0 builds the records
and prints the progress lines; the files are written by Ray Train's controller, on the
driver's node (raysys.train.callbacks.WriteMetrics, from rank 0's reports), so that on a
multi-node cluster they land under the run's `out` folder with everything else. On resume,
lines of steps after the restored step are dropped first, so the file always describes one
consistent trajectory.
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

HEADLINE = ("binary", "continuous", "loev", "cola")


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated (CUDA) or peak resident set size of this process (CPU)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _clean(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().float().item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a null marks a non-finite value
    return value


def say(text: str) -> None:
    """One console line from a training worker, written once.

    Not `print`: Ray Train patches `print` in its workers to log *and* echo each message, so
    every printed line reached the console twice."""
    sys.stdout.write(f"[raysys] {text}\n")
    sys.stdout.flush()


def eta(elapsed_s: float, done: int, left: int) -> str:
    """`ETA 3m05s` from the pace so far (`done` steps in `elapsed_s`); '' before any step."""
    if done <= 0 or left <= 0:
        return ""
    s = round(elapsed_s / done * left)
    return f"ETA {s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"ETA {s // 60}m{s % 60:02d}s"


class MetricsLog:
    """Appends metrics to metrics.jsonl and TensorBoard; prints progress lines.

    `enabled=False` (ranks other than 0): neither. `write=False` (rank 0 of a training run):
    prints, and keeps the evaluation records in `outbox` for the next report instead of
    writing them (the controller writes every record)."""

    def __init__(self, run_dir: str, *, total_steps: int, resume_step: int = 0,
                 tensorboard: bool = True, enabled: bool = True, write: bool = True) -> None:
        self.enabled, self.write = enabled, write
        self.total_steps = total_steps
        self.path = Path(run_dir) / "metrics.jsonl"
        self.writer = None
        self.started = time.time()
        self.resume_step = resume_step
        self.outbox: list[dict[str, Any]] = []
        if not (enabled and write):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            purge = resume_step + 1 if resume_step else None  # drop events past the resume
            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"), purge_step=purge)

    def _truncate_after(self, step: int) -> None:
        if not self.path.exists():
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def _write(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Append one record to metrics.jsonl and TensorBoard (when this logger is enabled)."""
        record = {"step": step, "time": round(time.time(), 3),
                  **{k: _clean(v) for k, v in metrics.items()}}
        if self.enabled and self.write:
            self.append(record)
        return record

    def append(self, record: dict[str, Any]) -> None:
        """Write a record built already (`step`, `time`, values) to the files."""
        step = record["step"]
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in record.items():
                if name not in ("step", "time") and isinstance(value, int | float):
                    self.writer.add_scalar(name, value, step)
            self.writer.flush()

    def log(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        record = self._write(step, metrics)
        if self.enabled:
            say(self.progress_line(record))
        return record

    def log_eval(self, step: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """An in-training evaluation record (`eval/...` keys, raysys.train.intrain_eval): its
        own line, possibly after records of later steps (it is computed asynchronously)."""
        record = self._write(step, metrics)
        if not self.enabled:
            return record
        if not self.write:
            self.outbox.append(record)
        say(eval_line(step, record))
        return record

    def progress_line(self, r: dict[str, Any]) -> str:
        terms = " ".join(f"{k} {r[k]:.3f}" for k in HEADLINE if isinstance(r.get(k), float))
        elapsed = time.time() - self.started
        left = eta(elapsed, r["step"] - self.resume_step, self.total_steps - r["step"])
        fmt = lambda v, spec: "nan" if v is None else format(v, spec)  # noqa: E731
        return (
            f"step {r['step']}/{self.total_steps} loss {fmt(r.get('loss'), '.4f')} "
            f"({terms}) lr {fmt(r.get('lr'), '.2e')} {fmt(r.get('samples_per_s'), '.1f')} "
            f"samples/s data-wait {fmt(r.get('data_wait_fraction'), '.0%')} "
            f"pool {fmt(r.get('pool_keys'), '.0f')} elapsed {elapsed:.0f}s {left}"
        ).rstrip()

    def take_outbox(self) -> list[dict[str, Any]]:
        """The evaluation records not yet sent (and forget them)."""
        records, self.outbox = self.outbox, []
        return records

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def eval_line(step: int, record: dict[str, Any]) -> str:
    """One console line of an in-training evaluation: the main label set's NCC / logistic
    accuracy in each space, the random-label control's NCC, cross-modal R@1, graded nDCG."""
    if "eval/error" in record:
        return f"eval step {step}: failed: {record['eval/error']}"
    names = [k.removeprefix("eval/") for k in record if k.endswith("/ncc")]
    main = next((n.split("/")[0] for n in names if n.count("/") == 1 and
                 not n.startswith("random/")), None)
    parts = []
    for name in names:
        space, _, label = name.removesuffix("/ncc").rpartition("/")
        if label == main or label == "random":
            shown = f"{space}/{label}" if space else label
            values = "/".join(f"{record[f'eval/{name[:-3]}{m}']:.3f}"
                              for m in ("ncc", "logistic") if f"eval/{name[:-3]}{m}" in record)
            parts.append(f"{shown} {values}")
    parts += [f"{k.removeprefix('eval/')} {v:.3f}" for k, v in record.items()
              if k.startswith(("eval/retrieval/", "eval/relevance/")) and isinstance(v, float)]
    tail = f"({record.get('eval/entities', '?')} entities, {record.get('eval/seconds', 0):.1f}s)"
    return f"eval step {step} ncc/logistic: {', '.join(parts)} {tail}"
