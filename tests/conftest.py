"""Shared fixtures: one local Ray instance for the whole session, tiny demo archives."""

from __future__ import annotations

import os

import pytest

# Keep BLAS/torch from oversubscribing the 2 cores when Ray workers run beside pytest.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
# Ray Train's controller takes one report per worker per poll (every 2 s by default) and a
# worker's `ray.train.report` blocks while its previous one is still queued: the tiny runs,
# which report every step, were paced at 2 s a step. Polling every 0.5 s (what a user may set
# too) changes no result. Inherited by the Ray instances, jobs and subprocesses of the tests.
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")

pytest_plugins = ["s3_fixture"]  # the session-wide moto S3 server (fixture `s3_endpoint`)


@pytest.fixture(scope="session")
def ray_session(s3_endpoint):
    """One local Ray instance shared by every test that needs Ray.

    Started after the moto S3 server so that Ray's workers inherit its AWS_* variables.
    """
    import ray

    from raysys.runtime import init_ray

    init_ray(num_cpus=2, object_store_memory=512 * 1024**2, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory) -> str:
    """A small demo archive (24 entities), built once per session."""
    from raysys.data.demo import make_demo_archive

    root = tmp_path_factory.mktemp("demo") / "archive"
    make_demo_archive(str(root), entities=24, seed=0, missing_fraction=0.15)
    return str(root)
