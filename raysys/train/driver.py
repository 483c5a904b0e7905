"""The driver side of pretraining: validate, open the archive, run the TorchTrainer, export.

    result = pretrain(load_config("configs/demo.yaml", ["train.steps=100"]))

A fixed `train.run_name` + `storage_path` makes a resubmitted job resume from its latest
registered checkpoint (Ray Train restores it into every worker).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from raysys.config import ConfigError, RaysysConfig, _format_errors, dump_config
from raysys.data import fs
from raysys.data.pipeline import open_archive
from raysys.data.quarantine import TooManyBadRecords, ratings_problem
from raysys.train import intrain_eval, preflight
from raysys.train.checkpoint import consolidated_state
from raysys.train.export import export_model, model_state_from_module_state
from raysys.train.loop import model_inputs, signature, train_worker


def storage_path(cfg: RaysysConfig) -> str:
    """Where checkpoints go: `train.storage_path`, else `<out>/checkpoints` (absolute)."""
    return preflight.storage_root(cfg)


def build_trainer(cfg: RaysysConfig, pipe: Any, callbacks: list[Any] | None = None):
    """The run's TorchTrainer; `callbacks` go into its RunConfig (a sweep passes Tune's
    TuneReportCallback)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    t = cfg.train
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
            callbacks=callbacks,
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


def prepare(cfg: RaysysConfig) -> Any:
    """Everything checked before Ray starts a worker: config rules, storage reachable (with
    retries), archive valid, and the checkpoint a resubmission would resume from compatible.
    Returns the opened pipeline."""
    if fs.is_remote(cfg.out):
        raise ValueError("out: the run folder must be local (checkpoints may go to s3:// via "
                         "train.storage_path)")
    preflight.check_run_config(cfg)
    preflight.probe_storage(storage_path(cfg), retries=cfg.train.storage_retries)
    pipe = open_archive(cfg.archive, cfg.data)
    problem = ratings_problem(pipe.info, cfg.data.max_bad_fraction)  # as `data inspect` judges
    if problem:
        raise TooManyBadRecords(problem)
    for note in pipe.notes:
        print(f"[raysys] note: {note}", flush=True)
    if pipe.cfg.modalities != cfg.data.modalities:  # e.g. no logs.parquet: no tabular encoder
        cfg.data.modalities = list(pipe.cfg.modalities)
        try:
            RaysysConfig.model_validate(cfg.model_dump())  # cross-section rules still hold?
        except ValidationError as e:
            raise ConfigError(f"{'; '.join(pipe.notes)}; then: {_format_errors(e)}") from None
    intrain_eval.check(cfg, pipe)  # eval.every > 0: label columns and a held-out split exist
    resume_step = preflight.check_resume(cfg, signature(cfg, model_inputs(cfg, pipe)))
    if resume_step:
        print(f"[raysys] run {cfg.train.run_name!r} resumes from its checkpoint of step "
              f"{resume_step} in {preflight.run_folder(cfg)}", flush=True)
    return pipe


def pretrain(cfg: RaysysConfig, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Run (or resume) pretraining; returns a summary with the output locations.
    `callbacks`: Ray Train callbacks (a sweep's trial passes Tune's TuneReportCallback)."""
    from raysys.runtime import init_ray

    pipe = prepare(cfg)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(dump_config(cfg))
    init_ray()
    if pipe.stats is not None:
        pipe.save_stats(str(out / "tabular_stats.json"))
    result = build_trainer(cfg, pipe, callbacks).fit()
    if result.checkpoint is None:
        raise RuntimeError(f"training ended without a checkpoint: {result.error}")
    meta = export_from_checkpoint(cfg, pipe, result.checkpoint)
    summary = {
        "run": str(out.resolve()),
        "checkpoint": result.checkpoint.path,
        "model": str((out / "model").resolve()),
        "model_id": meta["model_id"],
        "steps": meta["step"],
        "metrics": str((out / "metrics.jsonl").resolve()),
        "final_metrics": result.metrics,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary
