"""Helpers for the fault-tolerance tests: when to inject a failure and which process to kill.

A failure is injected at a *failure point*: the run's latest checkpoint (step L) is registered
by Ray Train's controller and the workers have not yet logged the step of the next checkpoint.
The run must then resume from exactly L. Registration is not immediate: the controller collects
reports by polling the workers (`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`, default 2 s), so a failure
shortly after a report resumes from the checkpoint before (or from scratch when there was
none). Tests set `FAST_POLL` so that the window is short and the expected step is exact.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

# Ray Train V2 passes this variable from the driver to its controller (ENV_VARS_TO_PROPAGATE).
FAST_POLL = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2"}
SNAPSHOT = "checkpoint_manager_snapshot.json"  # written by the controller on each registration


def logged_steps(metrics: Path) -> list[int]:
    """Steps in metrics.jsonl (one line per logged step, appended by the controller from
    rank 0's reports); [] before the first."""
    if not metrics.exists():
        return []
    steps = []
    for line in metrics.read_text().splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError):  # a line being written right now
            continue
    return steps


def registered_step(experiment: Path) -> int:
    """Step of the latest checkpoint Ray Train has registered for the run folder
    `<storage_path>/<run_name>` (0 = none yet). Checkpoint folders are `step_XXXXXXXX`."""
    try:
        state = json.loads((experiment / SNAPSHOT).read_text())
    except (FileNotFoundError, ValueError):  # not written yet, or being rewritten
        return 0
    latest = state.get("latest_checkpoint_result") or {}
    name = latest.get("checkpoint_dir_name") or "step_0"
    return int(name.removeprefix("step_"))


def next_checkpoint(step: int, every: int, total: int) -> int:
    """The step of the first checkpoint after `step` (every `every` steps and at the end)."""
    return min((step // every + 1) * every, total)


def wait_for_failure_point(metrics: Path, experiment: Path, every: int, total: int,
                           timeout_s: float = 300) -> tuple[int, int]:
    """Block until a checkpoint L > 0 is registered and the logged steps are still short of
    the next checkpoint; returns (L, last logged step). Raises TimeoutError otherwise."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        registered = registered_step(experiment)
        steps = logged_steps(metrics)
        last = max(steps, default=0)
        if 0 < registered < total and last < next_checkpoint(registered, every, total):
            return registered, last
        if registered >= total:
            raise RuntimeError(f"the run finished (checkpoint {registered} registered) before "
                               "a failure point was seen")
        time.sleep(0.02)
    raise TimeoutError(f"no failure point within {timeout_s}s: registered checkpoint "
                       f"{registered_step(experiment)}, logged steps {logged_steps(metrics)}")


def alive_train_workers(node_id: str | None = None) -> list[dict[str, Any]]:
    """ALIVE RayTrainWorker actors of the connected cluster (Ray's state API, needs the
    dashboard), optionally on one node: dicts with `pid` and `node_id`. A finished run's
    worker group is shut down, so these are the workers of the run in progress."""
    import ray
    from ray.util.state import list_actors

    # The connected cluster's own address: without one the state API auto-detects and fails
    # when other Ray instances run on the host.
    address = ray.get_runtime_context().gcs_address
    filters = [("class_name", "=", "RayTrainWorker"), ("state", "=", "ALIVE")]
    if node_id is not None:
        filters.append(("node_id", "=", node_id))
    return [{"pid": a.pid, "node_id": a.node_id}
            for a in list_actors(address=address, filters=filters,
                                raise_on_missing_output=False)]


def wait_for_train_workers(count: int, exclude: set[int] = frozenset(),
                           timeout_s: float = 300) -> list[dict[str, Any]]:
    """Block until `count` RayTrainWorker actors (pids not in `exclude`, e.g. a worker group
    that has since been replaced) are ALIVE; returns them."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        found = [w for w in alive_train_workers() if w["pid"] not in exclude]
        if len(found) >= count:
            return found
        time.sleep(0.2)
    raise TimeoutError(f"fewer than {count} RayTrainWorker actors alive after {timeout_s}s")
