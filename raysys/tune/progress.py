"""The console side of a sweep: a progress line and a table of trials (a Ray Tune callback).

    [sweep] 14:02:11 trials 2 done (1 stopped early), 1 running, 0 failed, 1 pending of 4 ·
            elapsed 3m10s · ETA ~2m40s
"""

from __future__ import annotations

import time
from typing import Any

from ray.tune import Callback

from raysys.config import RaysysConfig


def trial_state(trial: Any, steps: int, status: str | None = None) -> str:
    """pending | running | completed | stopped (early, by ASHA) | error. `status` overrides
    the trial's own (Tune calls back on a trial's end before it updates its status)."""
    status = status or trial.status
    if status == "ERROR":
        return "error"
    if status == "TERMINATED":
        last = (trial.last_result or {}).get("step", 0)
        return "completed" if last >= steps else "stopped"
    return "running" if status == "RUNNING" else "pending"


def progress_line(states: list[str], total: int, elapsed: float) -> str:
    finished = sum(s in ("completed", "stopped", "error") for s in states)
    counts = {s: states.count(s) for s in ("stopped", "running", "error")}
    left = max(total - finished, 0)
    eta = ""
    if finished and left:  # wall time per finished trial so far (concurrency included)
        eta = f" · ETA ~{_dur(elapsed / finished * left)}"
    return (f"[sweep] {time.strftime('%H:%M:%S')} trials {finished} done "
            f"({counts['stopped']} stopped early), {counts['running']} running, "
            f"{counts['error']} failed, {left - counts['running']} pending of {total} · "
            f"elapsed {_dur(elapsed)}{eta}")


def _dur(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def trial_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A plain-text table: one row per trial, `columns` picked from each row dict."""
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


class SweepProgress(Callback):
    """Prints the progress line when a trial starts, ends, fails or (at most every
    `every_s`) reports, and the table of trials whenever one ends."""

    def __init__(self, cfg: RaysysConfig, every_s: float = 30.0) -> None:
        self.steps = cfg.train.steps
        self.total = cfg.sweep.num_samples
        self.metrics = cfg.sweep.metrics
        self.keys = list(cfg.sweep.space)
        self.every_s = every_s
        self.started = time.time()
        self.printed = 0.0

    def setup(self, **info: Any) -> None:
        self.started = time.time()

    def _total(self, trials: list[Any]) -> int:
        return max(self.total, len(trials))  # grid: num_samples x grid points

    def _line(self, trials: list[Any], ending: Any = None, status: str | None = None) -> None:
        states = [trial_state(t, self.steps, status if t is ending else None) for t in trials]
        print(progress_line(states, self._total(trials), time.time() - self.started), flush=True)
        self.printed = time.time()

    def table(self, trials: list[Any], ending: Any = None) -> str:
        rows = []
        for t in trials:
            r = t.last_result or {}
            state = trial_state(t, self.steps, "TERMINATED" if t is ending else None)
            rows.append({"trial": t.trial_id, "state": state,
                         "step": r.get("step"), **{m: r.get(m) for m in self.metrics},
                         **{k: t.config.get(k) for k in self.keys}})
        return trial_table(rows, ["trial", "state", "step", *self.metrics, *self.keys])

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._line(trials)

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict,
                        **info: Any) -> None:
        if time.time() - self.printed >= self.every_s:
            self._line(trials)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any,
                          **info: Any) -> None:
        self._line(trials, trial, "TERMINATED")
        print(self.table(trials, trial), flush=True)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        print(f"[sweep] trial {trial.trial_id} failed (recorded; the sweep goes on)", flush=True)
        self._line(trials, trial, "ERROR")
