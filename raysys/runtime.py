"""Starting or joining Ray, with quiet, predictable defaults for the CLI and jobs."""

from __future__ import annotations

import logging
import os
from typing import Any

# Idle workers a local instance keeps. Ray's default keeps as many as there are *available*
# CPUs: while the training workers (fractional CPUs) hold them all, every decode task's worker
# is killed 1 s after its task and the next task starts a new process (importing torch
# again): ~12 worker starts a minute were seen in the test suite (ray-project/ray#27863).
IDLE_WORKERS_KEPT = 4


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = True,
             **kwargs: Any) -> Any:
    """Join the cluster at `address` (or RAY_ADDRESS), else start a new local instance.

    Without an address this never attaches to some other `ray start` cluster that happens to
    run on the machine (Ray's own auto-detection would): local means local.

    `quiet` keeps Ray Data's per-operator progress lines off the console (raysys prints its own
    progress) and worker warnings at WARNING level.
    """
    import ray

    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS")
    options: dict[str, Any] = {"ignore_reinit_error": True, **kwargs}
    if address and address != "local":
        options["address"] = address
    else:
        options["address"] = "local"
        options.setdefault("num_cpus", num_cpus)
        options.setdefault("_system_config", {}).setdefault(
            "num_workers_soft_limit", IDLE_WORKERS_KEPT)
        options.setdefault("include_dashboard", True)  # Ray Train's state API needs it
    if quiet:
        options.setdefault("logging_level", logging.WARNING)
        options.setdefault("log_to_driver", True)
    ray.init(**options)
    if quiet:
        quiet_ray_data()
    return ray


def quiet_ray_data() -> None:
    """No per-operator progress output from Ray Data on the driver."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)


def quiet_worker_logs() -> None:
    """In a Ray Train worker: no `Reporting training result N: TrainingReport(... every metric
    ...)` line per report and no Ray Data progress notices ("Progress bars disabled", "Dataset
    ... execution finished"); warnings and errors still show.

    Ray Train's own `ray.train.*` INFO lines are silenced by the trainer's `LoggingConfig`, but
    the report line comes from a logger named after its *file* (`getLogger(__file__)` in Ray
    2.60's train/v2/_internal/execution/context.py), which that filter does not see."""
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray version: nothing to silence here
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
