"""One trial of a sweep: Tune's per-trial driver function, which runs a full pretraining.

    Tune trial (values of the searched keys) -> the trial's config (base config + values,
    out = SWEEP/trials/<trial id>, run name = trial id) -> raysys.train.driver.pretrain with
    TuneReportCallback: every `ray.train.report` of rank 0 (training metrics + the latest
    in-training evaluation) becomes a Tune result.

The run name is the trial id and the checkpoints live under the sweep's storage, so a trial
that Tune starts again (`raysys sweep --resume`) resumes from its latest checkpoint instead of
restarting (Ray Train restores it into every worker).
"""

from __future__ import annotations

import os
from typing import Any

from raysys.config import RaysysConfig, build_config
from raysys.data import fs
from raysys.tune.space import trial_tree

TRIALS = "trials"
CHECKPOINTS = "checkpoints"


def checkpoint_root(base: dict[str, Any], sweep_dir: str) -> str:
    """Where trial checkpoints go: `<train.storage_path>/<sweep name>` when the base config
    sets one (e.g. s3://), else `SWEEP/checkpoints`."""
    storage = (base.get("train") or {}).get("storage_path")
    if storage:
        return fs.join(fs.normalize(storage), os.path.basename(os.path.abspath(sweep_dir)))
    return os.path.join(os.path.abspath(sweep_dir), CHECKPOINTS)


def trial_config(base: dict[str, Any], values: dict[str, Any], sweep_dir: str,
                 trial_id: str) -> RaysysConfig:
    """The full pretraining config of one trial."""
    tree = trial_tree(base, values)
    tree["out"] = os.path.join(os.path.abspath(sweep_dir), TRIALS, trial_id)
    train = tree.setdefault("train", {})
    train["run_name"] = trial_id
    train["storage_path"] = checkpoint_root(base, sweep_dir)
    return build_config(tree)


def _pretrain(cfg: dict[str, Any], callback: Any) -> dict[str, Any]:
    from raysys.runtime import quiet_ray_data
    from raysys.train.driver import pretrain

    quiet_ray_data()
    return pretrain(RaysysConfig.model_validate(cfg), callbacks=[callback])


def run_trial(values: dict[str, Any], *, base: dict[str, Any], sweep_dir: str) -> None:
    """Tune's trainable (wrapped with `tune.with_parameters`): pretrain with this trial's
    values; metrics reach Tune through TuneReportCallback. An exception fails only this trial
    (Tune records it with its error; the sweep goes on).

    The pretraining driver runs in a task outside the trial's placement group: Tune captures
    the child tasks of a trial in its group, Ray Train's controller and workers would inherit
    that, and the Ray Data decode tasks the workers start would then wait forever for CPUs
    inside the (full) training group. The callback is built here, in the Tune session."""
    import ray
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = trial_config(base, values, sweep_dir, trial_id)
    # RAY_ADDRESS for what the driver starts (inherited): Ray Train's PlacementGroupCleaner
    # asks the state API whether the controller lives, and without an address that fails on a
    # machine running several Ray instances, so the group of a trial ASHA stopped would leak
    # (its CPUs never return and the next trial's Ray Data tasks wait forever).
    env = {"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}}
    driver = ray.remote(num_cpus=0, max_retries=0, scheduling_strategy="DEFAULT",
                        runtime_env=env)(_pretrain)
    summary = ray.get(driver.remote(cfg.model_dump(mode="json"), TuneReportCallback()))
    if summary.get("already_done"):  # resumed after its last checkpoint: nothing was reported
        ray.tune.report({**(summary.get("final_metrics") or {}), "step": summary["steps"]})
