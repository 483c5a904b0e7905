"""A node leaving mid-run, on a real multi-node Ray cluster (`ray.cluster_utils.Cluster`).

    python tests/train_cluster_script.py ARCHIVE OUT [override ...]

Runs in its own process (its own Ray cluster, separate from the test session's). The head has
no CPUs, so nothing that needs one runs there; two worker nodes have NODE_CPUS each and the run
uses `train.placement_strategy=STRICT_SPREAD`, so each node holds exactly one training worker
(rank 0 and rank 1) and the data tasks run beside them. At a failure point (a checkpoint L
is registered and the next one is not yet logged; see fault_helpers.py) the second node is
removed without grace, its processes die with it, and a replacement node joins (STRICT_SPREAD
needs two nodes again). Ray Train's controller sees the lost worker, restarts the worker group
on the remaining node and the replacement, and every worker resumes from checkpoint L.

Prints one JSON line: steps, the registered checkpoint and the last logged step at the
removal, whether the removed node held a worker, and the nodes of the restarted worker group.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from fault_helpers import FAST_POLL, logged_steps, wait_for_failure_point, wait_for_train_workers

MIB = 1024**2
# Per worker node: 0.5 for its training worker, 0.5 for a decode task, and a whole free CPU for
# Ray Data's small 1-CPU tasks (`from_pandas` reads block metadata in default-resource tasks:
# with only 0.5 CPU free on every node those stay pending and the first step never comes).
NODE_CPUS = 2


def free_port() -> int:
    """A free local port (others' Ray instances may hold the default dashboard port 8265)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def leave_at_failure_point(cluster: Any, leaving: Any, run: Path, experiment: Path,
                           every: int, total: int, report: dict[str, Any]) -> None:
    """Remove `leaving` at a failure point, add a replacement node, and record where the
    restarted worker group runs. Errors go to report["error"] (the test shows them)."""
    try:
        workers = wait_for_train_workers(2)
        on_leaving = [w["pid"] for w in workers if w["node_id"] == leaving.node_id]
        registered, _ = wait_for_failure_point(run / "metrics.jsonl", experiment, every, total)
        cluster.remove_node(leaving, allow_graceful=False)
        # A real node loss takes its processes along; on one host the removed raylet's worker
        # processes would only notice after a while, so they go at the same moment.
        for pid in on_leaving:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        report.update(registered=registered, logged_at_removal=max(logged_steps(
            run / "metrics.jsonl")), removed_node_had_worker=bool(on_leaving))
        replacement = cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=128 * MIB)
        report["replacement_node"] = replacement.node_id
        restarted = wait_for_train_workers(2, exclude={w["pid"] for w in workers})
        report["restarted_on"] = sorted(w["node_id"] for w in restarted)
    except Exception as e:  # noqa: BLE001 - reported to the test, which fails with it
        report["error"] = repr(e)
        print(f"[cluster script] failure injection failed: {e!r}", file=sys.stderr, flush=True)


def run_pretrain(pretrain: Any, cfg: Any, outcome: dict[str, Any]) -> None:
    """`pretrain(cfg)` with its summary or error put into `outcome`."""
    try:
        outcome["summary"] = pretrain(cfg)
    except Exception as e:  # noqa: BLE001 - re-raised by main()
        outcome["error"] = repr(e)


def main(archive: str, out: str, overrides: list[str]) -> dict[str, Any]:
    os.environ.update(FAST_POLL)  # registration within 0.2 s (propagated to the controller)
    from ray.cluster_utils import Cluster

    from raysys.config import load_config
    from raysys.runtime import init_ray
    from raysys.train.driver import pretrain

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": True, "dashboard_port": free_port(),
        "object_store_memory": 256 * MIB})
    staying = cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=128 * MIB)
    leaving = cluster.add_node(num_cpus=NODE_CPUS, object_store_memory=128 * MIB)
    cluster.wait_for_nodes()
    init_ray(cluster.address, log_to_driver=bool(os.environ.get("RAYSYS_TEST_VERBOSE")))
    run = Path(out) / "run"
    cfg = load_config("configs/tiny.yaml", [
        f"archive={archive}", f"out={run}", "train.run_name=node",
        "train.placement_strategy=STRICT_SPREAD", "train.max_failures=2", *overrides])
    report: dict[str, Any] = {"staying_node": staying.node_id, "left_node": leaving.node_id}
    # The run goes to a thread: Cluster.add_node installs signal handlers, which only works in
    # the main thread, and the replacement node must join while the run is in flight.
    outcome: dict[str, Any] = {}
    runner = threading.Thread(target=run_pretrain, args=(pretrain, cfg, outcome), daemon=True)
    runner.start()
    try:
        leave_at_failure_point(cluster, leaving, run, run / "checkpoints" / "node",
                               cfg.train.checkpoint_every, cfg.train.steps, report)
        runner.join()
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()
    if "error" in outcome:
        raise RuntimeError(f"pretrain failed: {outcome['error']} (report: {report})")
    summary = outcome["summary"]
    return {"steps": summary["steps"], **report}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3:])), flush=True)
