"""Shared fixtures: one local Ray instance for the whole session, tiny demo archives."""

from __future__ import annotations

import os

import pytest

# Keep BLAS/torch from oversubscribing the 2 cores when Ray workers run beside pytest.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance shared by every test that needs Ray."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            object_store_memory=512 * 1024**2,
        )
    yield ray
    ray.shutdown()
