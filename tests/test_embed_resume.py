"""Embedding that survives crashes and runs against S3: a `jobs/embed.py` driver killed with
SIGKILL once some shards exist, then rerun and verified exactly-once; an archive and output
on a real S3 endpoint (moto's server)."""

from __future__ import annotations

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


def _start_job(export: str, archive: str, out: str, address: str, log: Path) -> subprocess.Popen:
    args = [f"{k}={v}" for k, v in {**RUN, **SETTINGS}.items()]
    cmd = [sys.executable, "jobs/embed.py", "--checkpoint", export, "--archive", archive,
           "--output", out, "--address", address, *args]
    return subprocess.Popen(cmd, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


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
