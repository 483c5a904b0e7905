"""Cluster jobs end to end (issue 17): a real `ray start --head` (token auth on, its own ports and
temp dir), `jobs/pretrain.py`, `jobs/embed.py` and `jobs/sweep.py` submitted with the jobs API
and the repository as `--working-dir`, archive, checkpoints and embeddings on moto's S3
server. A job with a bad config, or a relative output path, ends FAILED with the reason in its
logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from s3_fixture import free_port, make_bucket

pytestmark = [pytest.mark.slow, pytest.mark.s3]

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "jobs"
ARCHIVE = f"s3://{BUCKET}/archive"
EXCLUDES = [".git", ".venv", "raysys-demo", "**/__pycache__", "*.egg-info", ".pytest_cache"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
PY = sys.executable  # the job's `python`: this environment's (PATH may lack it)


def head_command(temp_dir: str, dashboard: int) -> list[str]:
    ray = str(Path(sys.executable).parent / "ray")
    ports = {name: free_port() for name in ("port", "node-manager-port", "object-manager-port",
                                             "ray-client-server-port", "metrics-export-port",
                                             "dashboard-agent-listen-port",
                                             "dashboard-agent-grpc-port", "runtime-env-agent-port")}
    taken = {dashboard, *ports.values()}
    low = free_port()
    while any(low <= port <= low + 200 for port in taken):  # ray start refuses an overlap
        low = free_port()
    return [ray, "start", "--head", "--block", "--num-cpus=2", f"--temp-dir={temp_dir}",
            "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}",
            "--include-dashboard=true", "--disable-usage-stats",
            f"--min-worker-port={low}", f"--max-worker-port={low + 200}",
            *(f"--{name}={port}" for name, port in ports.items())]


def auth_headers() -> dict[str, str]:
    """The token `ray start` uses (~/.ray/auth_token, written on first use); in-process the
    jobs client would only send it if RAY_AUTH_MODE=token had been set before Ray loaded."""
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    return {"Authorization": f"Bearer {_get_default_token_path().read_text().strip()}"}


def client(address: str):
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=auth_headers())


def stop_head(head: subprocess.Popen, temp_dir: str) -> None:
    """SIGTERM to the `ray start --block` process group, SIGKILL after 5 s (it took 15 s and
    more on a busy machine; nothing of it is kept); then any process still naming our temp
    dir (a worker the raylet started in its own group) by its pid."""
    import psutil

    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=15)
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if any(temp_dir in part for part in proc.info["cmdline"] or []):
            proc.kill()


@pytest.fixture(scope="module")
def cluster(s3_endpoint) -> Iterator[str]:
    """A `ray start --head` of our own with token auth (the AWS_* variables of the moto server
    inherited by every Ray process); yields the job server's address. Stopped by killing its
    process group (never `ray stop`, which stops every Ray instance on the machine)."""
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Unix socket path limits
    dashboard = free_port()
    address = f"http://127.0.0.1:{dashboard}"
    log = Path(temp_dir) / "ray-start.log"  # why it failed, if it does
    with log.open("wb") as sink:
        head = subprocess.Popen(head_command(temp_dir, dashboard),
                                env={**os.environ, "RAY_AUTH_MODE": "token"},
                                start_new_session=True, stdout=sink, stderr=subprocess.STDOUT)
    try:
        make_bucket(s3_endpoint, BUCKET)  # while the head starts
        from raysys.data.demo import make_demo_archive

        make_demo_archive(ARCHIVE, entities=24, seed=5, missing_fraction=0.1)
        deadline = time.time() + 120
        while True:
            try:
                client(address).list_jobs()
                break
            except Exception:  # noqa: BLE001 - not up yet
                assert head.poll() is None and time.time() < deadline, (
                    f"ray start failed (exit {head.poll()}); its output ends:\n"
                    + log.read_text(errors="replace")[-2000:])
                time.sleep(1)
        yield address
    finally:
        stop_head(head, temp_dir)


def start(address: str, entrypoint: str, deadline: float) -> str:
    """Submit with the repository as working dir; the job's id."""
    return retry(lambda: client(address).submit_job(
        entrypoint=entrypoint, runtime_env={"working_dir": str(ROOT), "excludes": EXCLUDES}),
        deadline)


def finish(address: str, job: str, deadline: float) -> tuple[str, str]:
    """Wait for a terminal status of `job`; (status, logs)."""
    jobs = client(address)
    while (status := str(retry(lambda: jobs.get_job_status(job), deadline).value)
           ) not in TERMINAL:
        assert time.time() < deadline, f"job {job} still {status} at its deadline"
        time.sleep(2)
    return status, retry(lambda: jobs.get_job_logs(job), deadline)


def submit(address: str, entrypoint: str, timeout_s: float = 600) -> tuple[str, str]:
    """Submit and wait for a terminal status; (status, logs)."""
    deadline = time.time() + timeout_s
    return finish(address, start(address, entrypoint, deadline), deadline)


TRANSIENT = ("not yet", "try again later", "Connection aborted", "RemoteDisconnected")


def retry(call: Callable[[], Any], deadline: float) -> Any:
    """`call()`, retried on the job server's transient answers: a fresh head may answer
    list_jobs before its agent can take a job ("Head node id has not yet been persisted", "No
    available agent ... try again later"), and on an overloaded machine a request can be
    dropped."""
    while True:
        try:
            return call()
        except Exception as e:  # noqa: BLE001 - re-raised unless transient
            if not any(t in str(e) for t in TRANSIENT) or time.time() > deadline:
                raise
            time.sleep(3)


TRACEBACK = "Traceback (most recent call last):"


def error_tracebacks(logs: str) -> list[str]:
    """The tracebacks in a job's logs, less Ray's own exit of a worker that gets SIGTERM when
    the job's driver ends (its handler raises SystemExit wherever the worker stands, and when
    that is inside a weakref callback Python prints the traceback): CI saw one from the idle
    trial actor of a sweep that had succeeded."""
    blocks = logs.split(TRACEBACK)[1:]
    return [b for b in blocks if not ("in sigterm_handler" in b and "SystemExit: 1" in b)]


def test_error_tracebacks_skips_only_the_sigterm_exit():
    teardown = (f"(run_trial pid=1) {TRACEBACK}\n(run_trial pid=1)   File \"x.py\", line 39\n"
                "(run_trial pid=1)   File \"worker.py\", line 1063, in sigterm_handler\n"
                "(run_trial pid=1) SystemExit: 1\n")
    error = f"{TRACEBACK}\n  File \"trial.py\", line 3, in run\nValueError: bad\n"
    assert error_tracebacks("ok\n" + teardown + "done\n") == []
    assert len(error_tracebacks(teardown + error)) == 1
    assert "ValueError" in error_tracebacks(error + teardown)[0]


def s3_exists(uri: str) -> bool:
    import pyarrow.fs as pafs

    from raysys.data import fs

    filesystem, path = fs.resolve(uri)
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


PRETRAIN = f"{PY} jobs/pretrain.py --config configs/tiny.yaml --archive {ARCHIVE}"
BAD = {"unknown key": f"{PRETRAIN} train.stepz=3", "relative out": f"{PRETRAIN} --out runs/a"}


@pytest.fixture(scope="module")
def bad_jobs(cluster) -> dict[str, str]:
    """The jobs that must fail, submitted together at the start (their drivers need no CPU
    of the cluster, so they run beside the pretraining job); name -> job id."""
    deadline = time.time() + 600
    return {name: start(cluster, entrypoint, deadline) for name, entrypoint in BAD.items()}


def test_pretrain_then_embed_jobs_succeed(cluster, bad_jobs, tmp_path):
    run = tmp_path / "run"
    status, logs = submit(cluster, (
        f"{PRETRAIN} --out {run} --steps 4 train.checkpoint_every=2 "
        f"train.storage_path=s3://{BUCKET}/ckpt train.cpus_per_worker=auto "
        "data.decode_cpus=auto"))
    assert status == "SUCCEEDED", logs[-3000:]
    assert "[raysys] resources: 2 workers x 0.5 CPU" in logs
    assert logs.count("[raysys] step 4/4") == 1 and "TrainingReport(" not in logs
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4]
    assert (run / "model" / "model.json").is_file() and (run / "summary.json").is_file()
    assert s3_exists(f"s3://{BUCKET}/ckpt/raysys/step_00000004")

    status, logs = submit(cluster, (
        f"{PY} jobs/embed.py --checkpoint {run}/model --archive {ARCHIVE} "
        f"--output s3://{BUCKET}/emb decode_cpus=0.5 cpus_per_actor=0.5"))
    assert status == "SUCCEEDED", logs[-3000:]
    assert s3_exists(f"s3://{BUCKET}/emb/_SUCCESS")


def test_bad_jobs_fail_naming_the_reason(cluster, bad_jobs):
    deadline = time.time() + 600
    status, logs = finish(cluster, bad_jobs["unknown key"], deadline)
    assert status == "FAILED"
    assert "train.stepz: unknown key; did you mean `train.steps`?" in logs
    assert "Traceback" not in logs
    status, logs = finish(cluster, bad_jobs["relative out"], deadline)
    assert status == "FAILED" and "out='runs/a': a relative path under a Ray job" in logs


def test_sweep_job_succeeds_with_the_archive_and_checkpoints_on_s3(cluster, bad_jobs, tmp_path):
    """A one-trial grid sweep as a job: the archive on S3, trial checkpoints on S3, the sweep
    folder absolute and local; its results and a best.yaml that `raysys pretrain` accepts."""
    from raysys.config import load_config

    out = tmp_path / "sweep"
    status, logs = submit(cluster, (
        f"{PY} jobs/sweep.py --config configs/tiny.yaml --archive {ARCHIVE} --out {out} "
        f"--steps 4 train.checkpoint_every=2 train.storage_path=s3://{BUCKET}/sweep-ckpt "
        "eval.every=2 data.eval_fraction=0.5 sweep.search=grid sweep.scheduler=none "
        "sweep.num_samples=1 sweep.metric=eval/label/ncc "
        "'sweep.space.train.lr={choice: [0.002]}'"))
    assert status == "SUCCEEDED", logs[-3000:]
    assert error_tracebacks(logs) == []
    import pandas as pd

    results = pd.read_parquet(out / "results.parquet")
    assert list(results["state"]) == ["completed"] and list(results["steps"]) == [4]
    assert results["eval/label/ncc"].between(0, 1).all()
    best = load_config(out / "best.yaml")
    assert best.train.lr == 0.002 and best.archive == ARCHIVE
    trial = results["trial_id"].iloc[0]
    assert s3_exists(f"s3://{BUCKET}/sweep-ckpt")
    assert (out / "trials" / trial / "metrics.jsonl").is_file()
