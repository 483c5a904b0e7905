"""Plots of a sweep (matplotlib, Agg) into SWEEP/plots/:

    metric_vs_<key>.png     final metric against each searched key (log axis for loguniform;
                            stopped trials hollow, the best filled red)
    pareto.png              multi-objective: every trial in the first two metrics, the front
    metric_over_steps.png   each trial's metric over its reports; an x where ASHA stopped it
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from raysys.config import RaysysConfig
from raysys.tune.space import dimensions


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def metric_vs_keys(results: pd.DataFrame, cfg: RaysysConfig, best: pd.DataFrame,
                   folder: Path, plt) -> list[Path]:
    metric, paths = cfg.sweep.metrics[0], []
    for key, dim in dimensions(cfg.sweep).items():
        col = f"config/{key}"
        fig, ax = plt.subplots(figsize=(5, 3.5))
        styles = {"completed": {"color": "C0"}, "stopped": {"facecolors": "none",
                                                           "edgecolors": "C0"}}
        for state, style in styles.items():
            part = results[(results["state"] == state) & results[metric].notna()]
            if len(part):
                ax.scatter(part[col], part[metric], label=state, **style)
        ax.scatter(best[col], best[metric], color="red", label="best", zorder=3)
        if dim.kind == "loguniform":
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (final)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = folder / f"metric_vs_{_safe(key)}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def pareto_plot(results: pd.DataFrame, cfg: RaysysConfig, best: pd.DataFrame, folder: Path,
                plt) -> Path:
    a, b = cfg.sweep.metrics[:2]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(results[a], results[b], color="C0", label="trials")
    front = best.sort_values(a)
    ax.plot(front[a], front[b], "o-", color="red", label="Pareto front")
    ax.set_xlabel(f"{a} ({cfg.sweep.modes[0]})")
    ax.set_ylabel(f"{b} ({cfg.sweep.modes[1]})")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = folder / "pareto.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def over_steps(results: pd.DataFrame, history: pd.DataFrame, cfg: RaysysConfig, folder: Path,
               plt) -> Path:
    metric = cfg.sweep.metrics[0]
    fig, ax = plt.subplots(figsize=(6, 4))
    states = dict(zip(results["trial_id"], results["state"], strict=True))
    for i, (trial, part) in enumerate(history.groupby("trial_id")):
        if metric not in part:
            continue
        part = part.dropna(subset=[metric])
        x = part["eval/step"] if "eval/step" in part else part["step"]
        ax.plot(x, part[metric], "-", color=f"C{i % 10}", label=trial)
        if states.get(trial) == "stopped" and len(part):
            ax.plot(x.iloc[-1], part[metric].iloc[-1], "x", color="black", markersize=9)
    ax.set_xlabel("step (of the evaluation)")
    ax.set_ylabel(metric)
    ax.set_title("x: stopped early by ASHA", fontsize=8)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = folder / "metric_over_steps.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(results: pd.DataFrame, history: pd.DataFrame, cfg: RaysysConfig,
                best: pd.DataFrame) -> list[str]:
    """Every plot that the results allow; [] when matplotlib is missing or nothing ran."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    if results.empty or history.empty or cfg.sweep.metrics[0] not in results:
        return []
    folder = Path(cfg.out) / "plots"
    folder.mkdir(exist_ok=True)
    paths = metric_vs_keys(results, cfg, best, folder, plt)
    if cfg.sweep.multi_objective and set(cfg.sweep.metrics[:2]) <= set(results):
        paths.append(pareto_plot(results, cfg, best, folder, plt))
    paths.append(over_steps(results, history, cfg, folder, plt))
    return [str(p) for p in paths]
