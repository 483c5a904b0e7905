"""The driver of a sweep: check everything, build the Tuner, run or restore it, write outputs.

    tree, cfg = sweep_config("configs/sweep.yaml", ["out=sweeps/a"])   # validated, no Ray
    summary = run_sweep(tree, cfg)           # after Ray is started or joined
    summary = resume_sweep("sweeps/a")       # Tuner.restore: finished trials are not repeated

SWEEP/ holds `sweep.yaml` (the base config, overrides applied: what --resume reads),
`tune/` (Tune's experiment state), `trials/<trial id>/` (each trial's run folder:
metrics.jsonl, config.yaml, model/), `checkpoints/<trial id>/` (unless train.storage_path
points elsewhere) and the outputs of `raysys.tune.results`.

Security: `Tuner.restore` unpickles `SWEEP/tune/`; whoever can write there can run code at
resume. Keep the sweep folder (and the checkpoint prefix) writable by its owner only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from raysys.config import ConfigError, RaysysConfig, apply_overrides, build_config, read_yaml
from raysys.train.preflight import resolve_paths
from raysys.train.resources import Cluster
from raysys.tune.checks import check_sweep, concurrency, resolved_tree
from raysys.tune.space import param_space

SWEEP_FILE = "sweep.yaml"
TUNE_DIR = "tune"


def sweep_config(path: str | None, overrides: list[str]) -> tuple[dict[str, Any], RaysysConfig]:
    """(base tree, validated config) of a new sweep; every check that needs no Ray ran. Local
    paths are made absolute (under `ray job submit` a relative sweep folder is refused)."""
    tree = apply_overrides(read_yaml(path) if path else {}, overrides)
    cfg = build_config(tree)
    resolve_paths(cfg)
    tree["out"], tree["archive"] = cfg.out, cfg.archive
    if cfg.train.storage_path:
        tree.setdefault("train", {})["storage_path"] = cfg.train.storage_path
    check_sweep(tree, cfg)
    return tree, cfg


def saved_config(sweep_dir: str) -> tuple[dict[str, Any], RaysysConfig]:
    """The base tree and config a sweep was started with (for --resume), checked again."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        raise ConfigError(f"--resume {sweep_dir}: no {SWEEP_FILE} there (not a sweep folder)")
    tree = read_yaml(path)
    tree["out"] = os.path.abspath(sweep_dir)  # the folder may have moved since
    cfg = build_config(tree)
    check_sweep(tree, cfg)
    return tree, cfg


def trainable(tree: dict[str, Any], cfg: RaysysConfig, cluster: Cluster) -> Any:
    from ray import tune

    from raysys.tune.trial import run_trial

    fn = tune.with_parameters(run_trial, base=resolved_tree(tree, cfg, cluster),
                              sweep_dir=cfg.out)
    # Tune refuses an empty request: with 0 CPUs the trial asks for 1 MiB of memory instead.
    cpus = cfg.sweep.trial_cpus
    return tune.with_resources(fn, {"CPU": cpus} if cpus else {"CPU": 0, "memory": 2**20})


def search_and_scheduler(cfg: RaysysConfig, max_concurrent: int) -> tuple[Any, Any]:
    """The search algorithm (it enforces `max_concurrent`) and the scheduler."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    sweep = cfg.sweep
    if sweep.search == "optuna":
        import optuna

        from raysys.tune.optuna_search import EvaluatedOptunaSearch

        multi = sweep.multi_objective
        search = EvaluatedOptunaSearch(metric=sweep.metrics if multi else sweep.metrics[0],
                              mode=sweep.modes if multi else sweep.modes[0],
                              sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    else:
        search = BasicVariantGenerator(random_state=cfg.seed, max_concurrent=max_concurrent)
    scheduler = None
    if sweep.scheduler == "asha":  # on the first metric (multi-objective: the first objective)
        # Time is the step that was evaluated, not the step trained: the evaluation runs
        # asynchronously, so a report of step 6 may carry the evaluation of step 2; a rung at
        # step 4 then compares every trial's weights of step 4, never a stale value.
        scheduler = ASHAScheduler(time_attr="eval/step", metric=sweep.metrics[0],
                                  mode=sweep.modes[0], max_t=cfg.train.steps,
                                  grace_period=sweep.grace_period,
                                  reduction_factor=sweep.reduction_factor,
                                  stop_last_trials=False)  # a trial at max_t ends on its own
    return search, scheduler


def trial_dirname(trial: Any) -> str:
    """Trial folders (and names) are the trial id: stable across --resume."""
    return trial.trial_id


def build_tuner(tree: dict[str, Any], cfg: RaysysConfig, cluster: Cluster,
                max_concurrent: int) -> Any:
    from ray import tune

    from raysys.tune.progress import SweepProgress

    grid_like = cfg.sweep.search != "optuna"  # the generator itself holds max_concurrent
    search, scheduler = search_and_scheduler(cfg, max_concurrent)
    return tune.Tuner(
        trainable(tree, cfg, cluster),
        param_space=param_space(cfg.sweep),
        tune_config=tune.TuneConfig(num_samples=cfg.sweep.num_samples, search_alg=search,
                                    scheduler=scheduler,
                                    max_concurrent_trials=None if grid_like else max_concurrent,
                                    trial_dirname_creator=trial_dirname,
                                    trial_name_creator=trial_dirname),
        run_config=tune.RunConfig(name=TUNE_DIR, storage_path=cfg.out, verbose=0,
                                  callbacks=[SweepProgress(cfg)]),
    )


def _tune_env() -> None:
    # A trial's reports carry the evaluation metric once its first evaluation has finished;
    # earlier reports (and ASHA) simply go without it instead of failing the trial.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def run_sweep(tree: dict[str, Any], cfg: RaysysConfig) -> dict[str, Any]:
    """Run a new sweep into `cfg.out` (Ray must be started or joined)."""
    from raysys.tune.results import finish

    out = Path(cfg.out)
    if (out / TUNE_DIR).exists():
        raise ConfigError(f"out: {out} already holds a sweep; continue it with "
                          f"`raysys sweep --resume {out}` or choose another folder")
    cluster = Cluster.current()
    limit = concurrency(cfg, cluster)  # before any trial starts
    out.mkdir(parents=True, exist_ok=True)
    (out / SWEEP_FILE).write_text(yaml.safe_dump(tree, sort_keys=False))
    _tune_env()
    print(f"[sweep] {cfg.sweep.num_samples} samples, search {cfg.sweep.search}, scheduler "
          f"{cfg.sweep.scheduler}, at most {limit} trial(s) at once -> {out}", flush=True)
    grid = build_tuner(tree, cfg, cluster, limit).fit()
    return finish(grid, cfg)


def resume_sweep(sweep_dir: str) -> dict[str, Any]:
    """Continue a sweep whose driver stopped: Tune's restore runs unfinished trials (each
    resumes from its checkpoint) and new samples; finished and failed ones are kept as they
    are."""
    from ray import tune

    from raysys.tune.results import finish

    tree, cfg = saved_config(sweep_dir)
    path = os.path.join(cfg.out, TUNE_DIR)
    if not tune.Tuner.can_restore(path):
        raise ConfigError(f"--resume {sweep_dir}: no Tune experiment state in {path}")
    cluster = Cluster.current()
    concurrency(cfg, cluster)
    _tune_env()
    print(f"[sweep] resuming {cfg.out}", flush=True)
    tuner = tune.Tuner.restore(path, trainable=trainable(tree, cfg, cluster),
                               resume_unfinished=True,
                               resume_errored=False, restart_errored=False)
    return finish(tuner.fit(), cfg)
