"""The driver side of pretraining: validate, open the archive, run the TorchTrainer, export.

    result = pretrain(load_config("configs/demo.yaml", ["train.steps=100"]))

A fixed `train.run_name` + `storage_path` makes a resubmitted job resume from its latest
registered checkpoint (Ray Train restores it into every worker).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from raysys.config import ConfigError, RaysysConfig, _format_errors, dump_config
from raysys.config_rules import resolve_defaults
from raysys.data.pipeline import open_archive
from raysys.data.quarantine import TooManyBadRecords, ratings_problem
from raysys.train import intrain_eval, preflight
from raysys.train.checkpoint import consolidated_state
from raysys.train.export import export_model, model_state_from_module_state
from raysys.train.loop import model_inputs, signature, train_worker
from raysys.train.resources import Cluster, fit_resources


def storage_path(cfg: RaysysConfig) -> str:
    """Where checkpoints go: `train.storage_path`, else `<out>/checkpoints` (absolute)."""
    return preflight.storage_root(cfg)


# Ray Train's controller advances once per poll of its workers (every 2 s by default) and a
# worker's report waits for the poll: a warm 6-step run took 27.4 s at 2 s and 23.3 s at 0.5 s
# (benchmarks/bench_run_latency.py, docs/benchmarks.md). The environment wins.
POLL_ENV, POLL_DEFAULT_S = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"


def build_trainer(cfg: RaysysConfig, pipe: Any, callbacks: list[Any] | None = None):
    """The run's TorchTrainer; `callbacks` go into its RunConfig (a sweep passes Tune's
    TuneReportCallback). Ray Train passes the driver's POLL_ENV on to its controller."""
    from ray.train import (
        CheckpointConfig,
        FailureConfig,
        LoggingConfig,
        RunConfig,
        ScalingConfig,
    )
    from ray.train.torch import TorchConfig, TorchTrainer

    from raysys.train.callbacks import StopOnUserError, WriteMetrics

    t = cfg.train
    os.environ.setdefault(POLL_ENV, POLL_DEFAULT_S)
    pipe._logs_handle()  # put the logs into the object store once, shared by every worker
    return TorchTrainer(
        train_worker,
        train_loop_config={"cfg": cfg.model_dump(mode="json"), "pipeline": pipe},
        torch_config=TorchConfig(backend="nccl" if t.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=t.num_workers, use_gpu=t.use_gpu, placement_strategy=t.placement_strategy,
            resources_per_worker={"CPU": t.cpus_per_worker, **({"GPU": 1} if t.use_gpu else {})},
        ),
        run_config=RunConfig(
            name=t.run_name,
            storage_path=storage_path(cfg),
            checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
            failure_config=FailureConfig(max_failures=t.max_failures),
            # no INFO line per report (`TrainingReport(... every metric ...)`): the workers'
            # `[raysys] step` lines say it once; warnings and errors still show
            logging_config=LoggingConfig(log_level="WARNING"),
            # metrics.jsonl + TensorBoard written on the driver's node; a user error raised on
            # a worker (too many bad records): no restart, one message
            # (a sweep adds Tune's TuneReportCallback)
            callbacks=[WriteMetrics(cfg.out, t.steps, t.tensorboard), StopOnUserError(),
                       *(callbacks or [])],
        ),
    )


def export_from_checkpoint(cfg: RaysysConfig, pipe: Any, checkpoint: Any) -> dict[str, Any]:
    """Consolidate the final checkpoint (any ZeRO stage) into `<out>/model/`."""
    with checkpoint.as_directory() as d:
        step, state = consolidated_state(Path(d))
    stats = pipe.stats.to_dict() if pipe.stats is not None else None
    return export_model(
        Path(cfg.out) / "model", model_state_from_module_state(state), model_cfg=cfg.model,
        inputs=model_inputs(cfg, pipe), data_cfg=cfg.data, stats=stats, step=step,
    )


def prepare(cfg: RaysysConfig, info: Any = None) -> Any:
    """Everything checked before Ray starts: paths made absolute (raysys.train.preflight),
    storage reachable (with retries), archive valid, and the checkpoint a resubmission would
    resume from compatible. (The config's own rules ran when it was loaded.) Returns the opened
    pipeline; `cfg` is updated in place (absolute paths, modalities the archive lacks).
    `info`: the archive's tables when the caller checked them already (`check_tables`)."""
    preflight.resolve_paths(cfg)
    preflight.probe_storage(storage_path(cfg), retries=cfg.train.storage_retries)
    pipe = open_archive(cfg.archive, cfg.data, info)
    problem = ratings_problem(pipe.info, cfg.data.max_bad_fraction)  # as `data inspect` judges
    if problem:
        raise TooManyBadRecords(problem)
    for note in pipe.notes:
        say(f"note: {note}")
    if pipe.cfg.modalities != cfg.data.modalities:  # e.g. no logs.parquet: no tabular encoder
        cfg.data.modalities = list(pipe.cfg.modalities)
        resolve_defaults(cfg)  # a default cross head needs two modalities
        try:
            RaysysConfig.model_validate(cfg.model_dump())  # cross-section rules still hold?
        except ValidationError as e:
            raise ConfigError(f"{'; '.join(pipe.notes)}; then: {_format_errors(e)}") from None
    if len(pipe.entities.select("train")) == 0:
        raise ConfigError(f"data.eval_fraction={cfg.data.eval_fraction}: the archive's "
                          f"{len(pipe.entities)} entities are all held out; lower it")
    if len(pipe.train_entities) == 0:
        raise ConfigError(f"data.withhold_views={cfg.data.withhold_views} with data."
                          f"incomplete_entities={cfg.data.incomplete_entities}: no training "
                          "entity keeps a view of every modality; lower it or use `mask`")
    try:
        intrain_eval.check(cfg, pipe)  # eval.every > 0: label columns, a held-out split
    except ValueError as e:  # a user error about the archive and eval.*: no traceback
        raise ConfigError(str(e)) from None
    return pipe


def resume_step(cfg: RaysysConfig, pipe: Any) -> int:
    """Step of the checkpoint this run resumes from (0: a new run); said on the console."""
    step = preflight.check_resume(cfg, signature(cfg, model_inputs(cfg, pipe)))
    if step:
        say(f"run {cfg.train.run_name!r} resumes from its checkpoint of step {step} in "
            f"{preflight.run_folder(cfg)}")
    return step


def fit_cluster(cfg: RaysysConfig, pipe: Any) -> None:
    """Resolve `auto` CPUs against the cluster and refuse a run it can never schedule."""
    fit = fit_resources(cfg, Cluster.current())
    cfg.train.cpus_per_worker = fit.cpus_per_worker
    cfg.data.decode_cpus = pipe.cfg.decode_cpus = fit.decode_cpus
    say(f"resources: {fit.describe(cfg.train.num_workers)}")


def say(text: str) -> None:
    print(f"[raysys] {text}", flush=True)


def already_done(cfg: RaysysConfig, step: int) -> dict[str, Any]:
    """A resubmitted run whose checkpoint is at or past train.steps: nothing to train."""
    out = Path(cfg.out)
    say(f"run {cfg.train.run_name!r} is already at step {step} >= train.steps "
        f"({cfg.train.steps}): nothing to train (raise train.steps to continue it)")
    summary_file = out / "summary.json"
    if summary_file.is_file():
        return {**json.loads(summary_file.read_text()), "already_done": True}
    return {"run": str(out), "steps": step, "already_done": True}


def pretrain(cfg: RaysysConfig, address: str | None = None, info: Any = None,
             callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run (or resume) pretraining; returns a summary with the output locations.
    `callbacks`: Ray Train callbacks (a sweep's trial passes Tune's TuneReportCallback).

    Every check that needs no decoding runs before Ray starts; then `address` (or
    RAY_ADDRESS, else a new local instance) is joined and the run is fitted to its resources."""
    from raysys.runtime import init_ray

    started = time.monotonic()
    pipe = prepare(cfg, info)
    step = resume_step(cfg, pipe)
    if step >= cfg.train.steps:
        return already_done(cfg, step)
    init_ray(address)
    fit_cluster(cfg, pipe)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    if pipe.stats is not None:
        pipe.save_stats(str(out / "tabular_stats.json"))
    from raysys.train.callbacks import fit, last_training_record

    result = fit(build_trainer(cfg, pipe, callbacks))  # a worker's user error comes back as itself
    if result.checkpoint is None:
        raise RuntimeError(f"training ended without a checkpoint: {result.error}")
    meta = export_from_checkpoint(cfg, pipe, result.checkpoint)
    summary = {
        "run": str(out),
        "checkpoint": result.checkpoint.path,
        "model": str(out / "model"),
        "model_id": meta["model_id"],
        "steps": meta["step"],
        "metrics": str(out / "metrics.jsonl"),
        "final_metrics": last_training_record(out),
        "seconds": round(time.monotonic() - started, 1),  # this call's (a resumption: since then)
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
