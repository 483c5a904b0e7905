"""What a sweep checks before any trial starts; every error names the `sweep.*` key.

    check_space(tree)                 each key exists, the config accepts every range end/choice
    reported_metrics(cfg)             the metric names the in-training evaluation emits for
                                      this archive (opened without Ray)
    check_sweep(tree, cfg)            all of the above + the metric + ASHA vs eval.every
    trial_resources(cfg, cluster)     logical CPUs / GPUs one trial holds at once (`auto`
                                      CPUs resolved against the cluster, as pretrain does)
    concurrency(cfg, cluster)         max_concurrent_trials resolved against the cluster
"""

from __future__ import annotations

import math
from typing import Any

from raysys.config import ConfigError, RaysysConfig, build_config
from raysys.train.resources import Cluster, fit_resources
from raysys.tune.space import dimensions, get_dotted, set_dotted


def check_space(tree: dict[str, Any], cfg: RaysysConfig) -> None:
    """Every searched key names a config field and the config (with its cross-section rules)
    accepts the ends of each range and every choice."""
    dims = dimensions(cfg.sweep)
    if not dims:
        raise ConfigError("sweep.space: empty; give at least one `dotted.key: {distribution}`")
    for key, dim in dims.items():
        if key.startswith("sweep.") or key in ("out", "archive"):
            raise ConfigError(f"sweep.space.{key}: this key cannot be searched")
        for value in dim.probe_values():
            try:
                probe = build_config(set_dotted(tree, key, value))  # runs config_rules too
                got = get_dotted(probe.model_dump(mode="python"), key)
            except (ConfigError, KeyError, TypeError) as e:
                detail = str(e).replace("invalid config:\n  ", "").replace("\n  ", "; ")
                raise ConfigError(f"sweep.space.{key}: the config rejects {dim.kind} value "
                                  f"{value!r}: {detail}") from None
            if got != value and not _close(got, value):
                raise ConfigError(f"sweep.space.{key}: value {value!r} reads back as {got!r}")


def _close(a: Any, b: Any) -> bool:
    return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b)


def reported_metrics(cfg: RaysysConfig) -> list[str]:
    """The `eval/...` names the in-training evaluation can report on this archive."""
    from raysys.data.pipeline import open_archive
    from raysys.train.intrain_eval import label_sets_of, metric_names

    pipe = open_archive(cfg.archive, cfg.data)
    sets = list(label_sets_of(cfg.eval, pipe.info.manifest.labels))
    return metric_names(sets, list(pipe.cfg.modalities), cfg.eval,
                        graded=pipe.info.relevance is not None)


def check_metric(cfg: RaysysConfig) -> None:
    sweep = cfg.sweep
    if cfg.eval.every == 0:
        raise ConfigError("sweep.metric: trials report evaluation metrics only with "
                          "eval.every > 0 (the in-training evaluation); set eval.every")
    try:
        known = reported_metrics(cfg)
    except ValueError as e:  # no label columns, a configured column missing
        raise ConfigError(f"sweep.metric: no run of this archive reports it: {e}") from None
    for metric in sweep.metrics:
        if metric not in known:
            raise ConfigError(f"sweep.metric: {metric!r} is not reported by any run of this "
                              f"archive; the in-training evaluation reports: {', '.join(known)}")
    if sweep.scheduler == "asha" and sweep.grace_period < cfg.eval.every:
        raise ConfigError(f"sweep.grace_period ({sweep.grace_period}) < eval.every "
                          f"({cfg.eval.every}): ASHA would judge trials before their first "
                          "evaluation after the start; raise it or evaluate more often")


def check_sweep(tree: dict[str, Any], cfg: RaysysConfig) -> None:
    """Everything about the sweep that can be checked without Ray. (A remote `out` is refused
    by the config's own rules.)"""
    check_space(tree, cfg)
    check_metric(cfg)
    if cfg.sweep.search == "grid":
        bad = [k for k, d in dimensions(cfg.sweep).items() if d.kind != "choice"]
        if bad:
            raise ConfigError(f"sweep.space.{bad[0]}: sweep.search=grid needs `choice` values")


def trial_resources(cfg: RaysysConfig, cluster: Cluster) -> dict[str, float]:
    """What one trial holds while it trains: its driver function, the training workers, Ray
    Data (one decode task; more run when CPUs are free) and the evaluation actor. `auto` CPUs
    resolve as in the trial's own pretraining (raysys.train.resources); a trial that could
    never be scheduled raises ResourceMismatch naming the train.*/data.* keys."""
    fit = fit_resources(cfg, cluster)
    cpus = cfg.sweep.trial_cpus + fit.held_cpus + fit.decode_cpus
    return {"CPU": cpus, "GPU": float(cfg.train.num_workers if cfg.train.use_gpu else 0)}


def concurrency(cfg: RaysysConfig, cluster: Cluster) -> int:
    """`sweep.max_concurrent_trials` resolved (auto) or checked against the cluster (what its
    autoscaler can grow to, when it has one)."""
    need = trial_resources(cfg, cluster)
    has = {"CPU": cluster.cpu_capacity, "GPU": cluster.gpu_capacity}
    fits = min(math.floor(has[r] / n + 1e-9) for r, n in need.items() if n > 0)
    have = ", ".join(f"{has[r]:g} {r}" for r in need if need[r] > 0)
    per = ", ".join(f"{n:g} {r}" for r, n in need.items() if n > 0)
    if fits < 1:
        raise ConfigError(f"sweep.max_concurrent_trials: one trial needs {per} (train.* "
                          f"workers, data.decode_cpus, eval.cpus, sweep.trial_cpus); the "
                          f"cluster has {have}: no trial can be scheduled")
    wanted = cfg.sweep.max_concurrent_trials
    if wanted == "auto":
        return fits
    if wanted > fits:
        raise ConfigError(f"sweep.max_concurrent_trials: {wanted} trials need {wanted} x ({per})"
                          f"; the cluster has {have}: at most {fits} fit at once")
    return int(wanted)


def resolved_tree(tree: dict[str, Any], cfg: RaysysConfig, cluster: Cluster) -> dict[str, Any]:
    """The base tree with `auto` CPUs replaced by what they resolve to on `cluster`, so every
    trial holds what `concurrency` counted (a trial resolving them itself would see a cluster
    that may have grown or shrunk since)."""
    fit = fit_resources(cfg, cluster)
    out = tree
    for key, value in (("train.cpus_per_worker", fit.cpus_per_worker),
                       ("data.decode_cpus", fit.decode_cpus)):
        if key not in cfg.sweep.space:  # a searched value is the trial's own
            out = set_dotted(out, key, value)
    return out
