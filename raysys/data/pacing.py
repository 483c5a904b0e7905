"""Pacing Ray Data's streaming executor while its consumer has data waiting.

Ray Data (2.60) runs each dataset's scheduling loop in a thread of the process that iterates
it: in pretraining, every training worker runs one for its shard. The loop blocks only in
`ray.wait(active decode tasks, timeout=0.1)`. Once the consumer is the slower side (training
usually is) the pipeline is backpressured, nothing is in flight or a finished task's output
may not be read yet, and the loop spins: measured on 2 cores, the executor thread of each
training worker used as much CPU as its training thread (3.8 s against 3.9 s in 10 s), taking
a core of the two away from training. `ExecutorPacing.on_execution_step` (Ray Data's execution
callback, called after every loop step) sleeps `pause_s` when the consumer's output queue is
not empty, so the loop runs at most ~1/pause_s steps a second while nobody is waiting for it;
when the consumer has nothing to read the loop runs as fast as Ray made it. A pause delays
the next decode task's dispatch by at most `pause_s`, far less than a task takes.
benchmarks/bench_executor_pacing.py measures what it gives a training run.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from ray.data._internal.execution.execution_callback import ExecutionCallback


class ExecutorPacing(ExecutionCallback):
    """Sleep `pause_s` after a scheduling step while the consumer has output waiting."""

    pause_s: ClassVar[float] = 0.0
    steps: ClassVar[int] = 0  # loop steps and pauses this process has seen (tests read them)
    pauses: ClassVar[int] = 0

    def on_execution_step(self, executor: Any) -> None:
        cls = type(self)
        cls.steps += 1
        if cls.pause_s > 0 and consumer_has_data(executor):
            cls.pauses += 1
            time.sleep(cls.pause_s)


def consumer_has_data(executor: Any) -> bool:
    """The output queue holds something to read (Ray 2.60's `_consumer_idling` is its
    negation); False where another Ray version lacks it, so no pause is ever added there."""
    idling = getattr(executor, "_consumer_idling", None)
    return idling is not None and not idling()


def pace_ray_data(pause_ms: float) -> None:
    """Datasets created after this call in this process (DataContext.get_current()) pace
    their executor with `pause_ms` (0: Ray's own loop, unchanged)."""
    from ray.data import DataContext

    ExecutorPacing.pause_s = pause_ms / 1000.0
    classes = DataContext.get_current().custom_execution_callback_classes
    if ExecutorPacing not in classes:
        classes.append(ExecutorPacing)
