"""Embedding that survives crashes and runs against S3: a `jobs/embed.py` driver killed with
SIGKILL once some shards exist, then rerun and verified exactly-once; an archive and output
on a real S3 endpoint (moto's server)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from test_embed_helpers import RUN, assert_same_embeddings, embed_cfg, read_output, tiny_export

from raysys.data.demo import make_demo_archive
from raysys.embed import run_embed, store, verify_output
from raysys.embed.reference import plain_embed

REPO = Path(__file__).resolve().parents[1]
SETTINGS = {"shard_entities": 2, "batch_size": 2, "rows_per_task": 2, "actors": 1}


def _start_job(export: str, archive: str, out: str, address: str, log: Path,
               summary: Path | None = None) -> subprocess.Popen:
    """jobs/embed.py in a subprocess; stderr (and stdout unless `summary`) go to `log`."""
    args = [f"{k}={v}" for k, v in {**RUN, **SETTINGS}.items()]
    cmd = [sys.executable, "jobs/embed.py", "--checkpoint", export, "--archive", archive,
           "--output", out, "--address", address, *args]
    log_file = log.open("w")
    return subprocess.Popen(cmd, cwd=REPO, stdout=summary.open("w") if summary else log_file,
                            stderr=log_file, env={**os.environ, "OMP_NUM_THREADS": "1"})


def _kill_once_shards_exist(proc: subprocess.Popen, out: str, log: Path, at_least: int) -> None:
    deadline = time.monotonic() + 300
    while len(store.complete_shards(out)) < at_least:
        if proc.poll() is not None:
            pytest.fail(f"embed job ended (rc {proc.returncode}) before it could be killed:\n"
                        f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no shards after 300 s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-run, without any cleanup
    proc.wait(timeout=30)


@pytest.mark.slow
def test_killed_driver_then_rerun_gives_every_key_exactly_once(ray_session, tmp_path) -> None:
    archive, export, out = (str(tmp_path / n) for n in ("archive", "model", "emb"))
    make_demo_archive(archive, entities=24, seed=2, missing_fraction=0.15)
    tiny_export(archive, export)
    address = ray_session.get_runtime_context().gcs_address
    log = tmp_path / "job.log"
    _kill_once_shards_exist(_start_job(export, archive, out, address, log), out, log, 3)
    assert not Path(out, store.SUCCESS_FILE).exists(), "killed job must not look finished"
    ref = plain_embed(export, archive, embed_cfg(**SETTINGS))
    survivors = store.complete_shards(out)
    assert 3 <= len(survivors) < 12
    for index in survivors:  # every shard visible under its final name is whole
        shard = pq.read_table(Path(out, store.shard_name(index))).to_pandas()
        keys = sorted(set(shard["key"]))
        assert len(keys) == 2
        assert_same_embeddings(shard.sort_values(["key", "view"]).reset_index(drop=True),
                               ref[ref["key"].isin(keys)].reset_index(drop=True))
    summary = run_embed(export, archive, out, embed_cfg(**SETTINGS))
    assert summary["shards_skipped"] >= len(survivors) and summary["shards"] == 12
    assert summary["shards_skipped"] + summary["shards_embedded"] == 12
    report = verify_output(out, archive)
    assert report["ok"] and report["duplicates"] == report["missing"] == 0, report["problems"]
    assert_same_embeddings(read_output(out), ref)
    assert not [n for n in os.listdir(out) if ".tmp-" in n]  # stale temporaries cleaned


def _last_json(text: str) -> dict:
    """The JSON summary the job prints last (Ray's forwarded log lines may precede it)."""
    lines = text.splitlines()
    start = max(i for i, line in enumerate(lines) if line == "{")
    return json.loads("\n".join(lines[start:]))


def _driver_job_id(address: str, pid: int) -> str:
    """The Ray job id of the driver process `pid` (it registers shortly after starting)."""
    from ray.util.state import list_jobs

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for job in list_jobs(address, detail=True, raise_on_missing_output=False):
            if job.driver_info is not None and int(job.driver_info.pid) == pid:
                return job.job_id
        time.sleep(0.5)
    pytest.fail(f"driver pid {pid} never registered as a Ray job")


def _embedder_actors(address: str, job_id: str) -> list:
    """Alive actors of the Embedder pool of one job (Ray Data's `_MapWorker`, named after the
    class it hosts)."""
    from ray.util.state import list_actors

    actors = list_actors(address, filters=[("job_id", "=", job_id), ("state", "=", "ALIVE")],
                         detail=True, raise_on_missing_output=False)
    return [a for a in actors if "Embedder" in (a.repr_name or a.class_name or "")]


def _kill_embedder_after_first_shard(address: str, proc: subprocess.Popen, out: str,
                                     log: Path) -> tuple:
    """SIGKILL the inference actor's process once the first shard is written; returns
    (actor_id, shards written at the kill)."""
    job_id = _driver_job_id(address, proc.pid)
    deadline = time.monotonic() + 300
    while not store.complete_shards(out) or not (actors := _embedder_actors(address, job_id)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"embed job ended or stalled before the kill:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    (actor,) = actors  # actors=1: the only inference actor
    os.kill(int(actor.pid), signal.SIGKILL)  # the worker dies mid-batch, no cleanup
    return actor.actor_id, len(store.complete_shards(out))


@pytest.mark.slow
def test_killed_inference_actor_is_restarted_and_the_run_finishes_exactly_once(
        ray_session, tmp_path) -> None:
    """Ray Data restarts a killed pool actor and retries its batch; the same run completes and
    the collector's per-(key, view) de-duplication keeps every row exactly once."""
    from ray.util.state import get_actor

    archive, export, out = (str(tmp_path / n) for n in ("archive", "model", "emb"))
    make_demo_archive(archive, entities=24, seed=3, missing_fraction=0.15)
    tiny_export(archive, export)
    address = ray_session.get_runtime_context().gcs_address
    log, stdout = tmp_path / "job.log", tmp_path / "summary.json"
    proc = _start_job(export, archive, out, address, log, summary=stdout)
    actor_id, at_kill = _kill_embedder_after_first_shard(address, proc, out, log)
    assert 1 <= at_kill < 12, "the kill must land before the last shard"
    assert proc.wait(timeout=240) == 0, log.read_text()[-3000:]
    assert get_actor(actor_id, address).num_restarts >= 1  # the pool replaced the killed process
    summary = _last_json(stdout.read_text())
    assert summary["shards_embedded"] == 12 and summary["shards_skipped"] == 0
    report = verify_output(out, archive)
    assert report["ok"] and report["duplicates"] == report["missing"] == 0, report["problems"]
    ref = plain_embed(export, archive, embed_cfg(**SETTINGS))
    assert_same_embeddings(read_output(out), ref)
    assert summary["rows_embedded"] == len(ref)


@pytest.mark.slow
@pytest.mark.s3
def test_archive_and_output_on_s3(ray_session, s3_endpoint, tmp_path) -> None:
    from s3_fixture import make_bucket

    make_bucket(s3_endpoint, "embed")
    archive, out = "s3://embed/archive", "s3://embed/out"
    make_demo_archive(archive, entities=10, seed=4, missing_fraction=0.1)
    export = str(tmp_path / "model")
    tiny_export(archive, export)
    cfg = embed_cfg(shard_entities=4, actors=2, dtype="float16")
    summary = run_embed(export, archive, out, cfg)
    assert summary["shards_embedded"] == 3 and summary["rows_embedded"] > 0
    assert store.list_names(out)[:2] == ["_SUCCESS", "_job.json"]
    got = read_output(out)
    assert got["embedding"].map(len).eq(32).all()
    assert_same_embeddings(got, plain_embed(export, archive, cfg), atol=2e-3)
    report = verify_output(out, archive)
    assert report["ok"], report["problems"]
    assert run_embed(export, archive, out, cfg)["shards_skipped"] == 3
    assert np.isfinite(np.stack(got["embedding"]).astype(np.float32)).all()
