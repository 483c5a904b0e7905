"""What a finished (or resumed) sweep writes into SWEEP/.

    results.parquet / results.csv   one row per trial: trial id, state, error, steps run,
                                    the searched values (`config/<key>`), the final value of
                                    every sweep metric and of the loss, wall time, start-up
                                    time (trial start -> first report), the trial's run folder
    history.parquet / history.csv   every report of every trial: trial id, step, time, the
                                    sweep metrics, `eval/step` and the loss (metrics over time)
    best.yaml                       a ready `raysys pretrain` config of the best trial;
                                    multi-objective: best-1.yaml, best-2.yaml, ... one per
                                    Pareto point (ordered by the first metric)
    plots/                          raysys.tune.plots
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from raysys.config import RaysysConfig, build_config
from raysys.tune.progress import trial_table
from raysys.tune.trial import TRIALS


def _state(result: Any, steps: int) -> tuple[str, int]:
    df = result.metrics_dataframe
    last = int(df["step"].max()) if df is not None and "step" in df and len(df) else 0
    if result.error is not None:
        return "error", last
    if last == 0:
        return "pending", last
    return ("completed" if last >= steps else "stopped"), last


def trial_id_of(dirname: str, metrics: dict[str, Any] | None) -> str:
    """The trial id (= its run folder under SWEEP/trials) of a Tune trial folder. Trial folders
    are named by trial id (sweep.py), but a trial restored by --resume before Tune's state
    recorded its folder gets a new one with a random `_xxxx` suffix; its reports name it."""
    reported = (metrics or {}).get("trial_id")
    return str(reported) if reported else re.sub(r"_[0-9a-f]{4}$", "", dirname)


def collect(grid: Any, cfg: RaysysConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results, history) frames of every trial of a Tune ResultGrid."""
    keys, metrics = list(cfg.sweep.space), cfg.sweep.metrics
    rows, history = [], []
    for result in grid:
        trial_id = trial_id_of(Path(result.path).name, result.metrics)
        state, steps = _state(result, cfg.train.steps)
        df = result.metrics_dataframe
        row: dict[str, Any] = {"trial_id": trial_id, "state": state, "steps": steps,
                               "error": None if result.error is None else
                               error_text(result.error)}
        row.update({f"config/{k}": (result.config or {}).get(k) for k in keys})
        final = _final(df, metrics)
        row.update({m: final.get(m) for m in [*metrics, "loss"]})
        row["time_s"] = float(df["time_total_s"].max()) if _has(df, "time_total_s") else None
        row["startup_s"] = float(df["time_total_s"].iloc[0]) if _has(df, "time_total_s") else None
        row["run"] = str(Path(cfg.out) / TRIALS / trial_id)
        rows.append(row)
        if df is not None and len(df):
            cols = [c for c in ["step", "time_total_s", "eval/step", *metrics, "loss"]
                    if c in df]
            history.append(df[cols].assign(trial_id=trial_id))
    results = pd.DataFrame(rows).sort_values("trial_id").reset_index(drop=True)
    hist = (pd.concat(history, ignore_index=True) if history
            else pd.DataFrame(columns=["trial_id", "step"]))
    return results, hist


def root_cause(error: BaseException) -> BaseException:
    """The exception under Ray's wrappers: a failed trial's error is the task error of its
    driver (`RayTaskError`, `.cause`) around Ray Train's `WorkerGroupError` around each
    worker's own exception (`.worker_failures`, by rank); their text is tracebacks."""
    for _ in range(8):  # wrappers nest a few levels; bounded in case one refers to itself
        failures = getattr(error, "worker_failures", None)
        inner = failures[min(failures)] if failures else getattr(error, "cause", None)
        if not isinstance(inner, BaseException) or inner is error:
            break
        error = inner
    return error


def error_text(error: BaseException) -> str:
    """`Type: message` of what failed (the lowest rank's error), at most 2000 characters."""
    cause = root_cause(error)
    return f"{type(cause).__name__}: {cause}"[:2000]


def _has(df: pd.DataFrame | None, col: str) -> bool:
    return df is not None and col in df and len(df) > 0


def _final(df: pd.DataFrame | None, metrics: list[str]) -> dict[str, Any]:
    """Last reported value of each metric (the final evaluation of a completed trial)."""
    out: dict[str, Any] = {}
    for m in [*metrics, "loss"]:
        if _has(df, m):
            values = df[m].dropna()
            out[m] = float(values.iloc[-1]) if len(values) else None
    return out


def pareto_front(values: np.ndarray, modes: list[str]) -> np.ndarray:
    """Indices of the non-dominated rows of `values` [n, k] (maximising after the signs of
    `modes` are applied)."""
    signed = values * np.array([1.0 if m == "max" else -1.0 for m in modes])
    keep = []
    for i, v in enumerate(signed):
        dominated = np.any(np.all(signed >= v, axis=1) & np.any(signed > v, axis=1))
        if not dominated:
            keep.append(i)
    return np.array(keep, dtype=int)


def best_rows(results: pd.DataFrame, cfg: RaysysConfig) -> pd.DataFrame:
    """The best trial (one row) or the Pareto front (multi-objective), among completed trials
    with every metric (stopped ones when none completed)."""
    metrics, modes = cfg.sweep.metrics, cfg.sweep.modes
    ok = results.dropna(subset=metrics)
    done = ok[ok["state"] == "completed"]
    pool = done if len(done) else ok[ok["state"] == "stopped"]
    if pool.empty:
        return pool
    if len(metrics) == 1:
        pool = pool.sort_values(metrics[0], ascending=modes[0] == "min", kind="stable")
        return pool.head(1)
    front = pool.iloc[pareto_front(pool[metrics].to_numpy(float), modes)]
    return front.sort_values(metrics[0], ascending=modes[0] == "min", kind="stable")


def best_config(row: pd.Series, cfg: RaysysConfig, name: str) -> str:
    """YAML of a ready `raysys pretrain` config: the trial's config with a fresh run folder
    and the sweep's CPU settings."""
    trial = yaml.safe_load((Path(row["run"]) / "config.yaml").read_text())
    trial.pop("sweep", None)
    trial["out"] = str(Path(cfg.out) / name)
    trial["train"]["run_name"] = "raysys"
    trial["train"]["storage_path"] = cfg.train.storage_path
    for section, key in (("train", "cpus_per_worker"), ("data", "decode_cpus")):
        if f"{section}.{key}" not in cfg.sweep.space:  # the sweep's own (e.g. `auto`), not
            trial[section][key] = getattr(getattr(cfg, section), key)  # this cluster's share
    header = (f"# best of sweep {cfg.out}: trial {row['trial_id']} "
              + ", ".join(f"{m} = {row[m]:.4g}" for m in cfg.sweep.metrics) + "\n")
    checked = build_config(trial).model_dump(mode="json", exclude={"sweep"})
    return header + yaml.safe_dump(checked, sort_keys=False)


def finish(grid: Any, cfg: RaysysConfig) -> dict[str, Any]:
    """Write every output, print the final table, return a summary."""
    from raysys.tune.plots import write_plots

    out = Path(cfg.out)
    results, history = collect(grid, cfg)
    for frame, name in ((results, "results"), (history, "history")):
        frame.to_parquet(out / f"{name}.parquet", index=False)
        frame.to_csv(out / f"{name}.csv", index=False)
    best = best_rows(results, cfg)
    names = (["best.yaml"] if len(cfg.sweep.metrics) == 1
             else [f"best-{i + 1}.yaml" for i in range(len(best))])
    for name, (_, row) in zip(names, best.iterrows(), strict=False):
        (out / name).write_text(best_config(row, cfg, f"best-run-{row['trial_id']}"))
    plots = write_plots(results, history, cfg, best)
    columns = ["trial_id", "state", "steps", *cfg.sweep.metrics,
               *[f"config/{k}" for k in cfg.sweep.space]]
    print(trial_table(results.to_dict("records"), columns), flush=True)
    summary = {"sweep": str(out), "trials": len(results),
               "states": results["state"].value_counts().to_dict(),
               "best": [out / n for n in names[: len(best)]], "best_trials":
               best["trial_id"].tolist(), "results": out / "results.parquet", "plots": plots}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
