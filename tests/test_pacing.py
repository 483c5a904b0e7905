"""Ray Data's executor pacing (raysys.data.pacing) on a real pipeline: the executor pauses
while a slow consumer has batches waiting, never otherwise, and the batches do not change."""

from __future__ import annotations

import time

import numpy as np
import pytest

from raysys.data.config import DataConfig
from raysys.data.pacing import ExecutorPacing, pace_ray_data
from raysys.data.pipeline import open_archive

CFG = DataConfig(batch_size=8, clip_seconds=0.5, image_size=32, tabular_window=6,
                 max_candidates=8, rows_per_task=8, audio={"n_bins": 32})


@pytest.fixture
def pacing():
    """Counters reset; Ray's own loop (pause 0) again afterwards for the other tests."""
    ExecutorPacing.steps = ExecutorPacing.pauses = 0
    yield ExecutorPacing
    pace_ray_data(0.0)


def slow_read(pipe, delay_s: float) -> list[np.ndarray]:
    """Rank 0's shard of two epochs read like a training step that takes `delay_s`."""
    ds = pipe.dataset("train", epochs=2, shard=(0, 2, 4), diagnostics=False)
    keys = []
    for batch in ds.iter_batches(batch_size=4, batch_format="numpy", drop_last=True):
        keys.append(batch["key"])
        time.sleep(delay_s)
    return keys


def test_registering_twice_keeps_one_callback(ray_session, pacing) -> None:
    from ray.data import DataContext

    pace_ray_data(5.0)
    pace_ray_data(2.0)
    classes = DataContext.get_current().custom_execution_callback_classes
    assert classes.count(ExecutorPacing) == 1 and ExecutorPacing.pause_s == 0.002


def test_a_slow_consumer_pauses_the_executor_and_gets_the_same_batches(
        ray_session, demo_archive, pacing) -> None:
    pipe = open_archive(demo_archive, CFG)
    pace_ray_data(0.0)
    spinning = slow_read(pipe, 0.05)
    assert pacing.steps > 0 and pacing.pauses == 0  # pause 0: Ray's loop as it was
    pace_ray_data(5.0)
    pacing.steps = 0
    paced = slow_read(pipe, 0.05)
    assert pacing.pauses > 0 and pacing.pauses <= pacing.steps
    assert len(paced) == len(spinning) > 0
    assert all((a == b).all() for a, b in zip(paced, spinning, strict=True))
