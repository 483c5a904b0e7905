"""Shared fixtures: one local Ray instance for the whole session, tiny demo archives."""

from __future__ import annotations

import os

import pytest

# Keep BLAS/torch from oversubscribing the 2 cores when Ray workers run beside pytest.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

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
