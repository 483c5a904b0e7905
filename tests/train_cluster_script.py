"""A node leaving mid-run, on a real 2-node Ray cluster (`ray.cluster_utils.Cluster`).

    python tests/train_cluster_script.py ARCHIVE OUT [override ...]

Runs in its own process (its own Ray cluster, separate from the test session's): head with 2
CPUs + a second node with 1 CPU, workers placed SPREAD so one lands on the second node. Once
metrics.jsonl shows step 3 (past the checkpoint of step 2) the second node is removed; Ray Train
restarts the worker group on the head and the run resumes from its latest checkpoint. Prints
one JSON line: {"steps": ..., "removed_node_had_worker": ..., "removed_at_step": ...}.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

MIB = 1024**2


def free_port() -> int:
    """A free local port (others' Ray instances may hold the default dashboard port 8265)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def train_workers_on(node: Any) -> list[int]:
    """PIDs of RayTrainWorker processes under a node's raylet."""
    import psutil

    raylet = node.all_processes["raylet"][0].process.pid
    found = []
    for proc in psutil.Process(raylet).children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.NoSuchProcess:
            continue
    return found


def remove_after(cluster: Any, node: Any, metrics: Path, step: int, report: dict) -> None:
    """Wait for `step` in metrics.jsonl, then remove `node` from the cluster."""
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists():
            steps = [json.loads(x)["step"] for x in metrics.read_text().splitlines()]
            if steps and max(steps) >= step:
                workers = train_workers_on(node)
                report["removed_node_had_worker"] = bool(workers)
                report["removed_at_step"] = max(steps)
                cluster.remove_node(node, allow_graceful=False)
                # A real node loss takes its processes along at once; on one host the removed
                # raylet's worker processes can outlive it for a while, so end them too.
                for pid in workers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                return
        time.sleep(0.05)


def main(archive: str, out: str, overrides: list[str]) -> dict[str, Any]:
    from ray.cluster_utils import Cluster

    from raysys.config import load_config
    from raysys.runtime import init_ray
    from raysys.train.driver import pretrain

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": True, "dashboard_port": free_port(),
        "object_store_memory": 256 * MIB})
    second = cluster.add_node(num_cpus=1, object_store_memory=128 * MIB)
    cluster.wait_for_nodes()
    init_ray(cluster.address, log_to_driver=False)
    run = Path(out) / "run"
    cfg = load_config("configs/tiny.yaml", [
        f"archive={archive}", f"out={run}", "train.run_name=node",
        "train.placement_strategy=SPREAD", "train.max_failures=2", *overrides])
    report: dict[str, Any] = {"removed_node_had_worker": False, "removed_at_step": None}
    watcher = threading.Thread(target=remove_after,
                               args=(cluster, second, run / "metrics.jsonl", 3, report))
    watcher.start()
    try:
        summary = pretrain(cfg)
    finally:
        watcher.join()
        import ray

        ray.shutdown()
        cluster.shutdown()
    return {"steps": summary["steps"], **report}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], sys.argv[3:])), flush=True)
