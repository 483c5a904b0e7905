"""Ray Train callbacks of a run; they run in Ray Train's controller, which Ray places on the
driver's node.

`WriteMetrics`: metrics.jsonl and TensorBoard under the run's `out` folder, from rank 0's
reports (a rank 0 on another node of a cluster would write them on that node). Rank 0 sends
its evaluation records along with its next report (`payload`), and once more at the end.

`StopOnUserError`: a user error raised on a worker mid-run (TooManyBadRecords: the bad share
of the archive's records passed `data.max_bad_fraction`) ends the run at once instead of
restarting the worker group `train.max_failures` times (a restart reads the same bad files
again); `fit` turns it back into that error, so the command prints one message and exits 2.
On the worker, `hide_worker_traceback` keeps Ray Train from also logging that error's
traceback to the console.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from raysys.errors import UserError


def first_user_error(worker_exceptions: dict[int, BaseException]) -> UserError | None:
    """The user error of the lowest rank that raised one, else None."""
    for rank in sorted(worker_exceptions):
        if isinstance(worker_exceptions[rank], UserError):
            return worker_exceptions[rank]
    return None


class StopOnUserError(UserCallback):
    """Raise a worker's user error in the controller as a non-retryable ControllerError.

    Ray Train retries a worker-group error (`FailureConfig.max_failures`) but not a
    ControllerError whose cause is not one of its transient startup errors."""

    def after_exception(self, run_context: Any,
                        worker_exceptions: dict[int, BaseException]) -> None:
        from ray.train import ControllerError

        error = first_user_error(worker_exceptions)
        if error is not None:
            raise ControllerError(error)


GROUP = "_raysys/group"  # which worker group sent the report (a restart starts a new one)
EVALS = "_raysys/eval"  # the evaluation records rank 0 collected since its last report
PRIVATE = (GROUP, EVALS)
EVAL_PREFIX = "eval/"  # raysys.train.intrain_eval.PREFIX (not imported: it pulls in torch)


def payload(record: dict[str, Any], group: str, evals: list[dict[str, Any]]
            ) -> dict[str, Any]:
    """What rank 0 reports: its training record (or {} at the end), plus WriteMetrics' keys."""
    return {**record, GROUP: group, EVALS: evals}


def public(metrics: dict[str, Any]) -> dict[str, Any]:
    """Reported metrics without WriteMetrics' keys."""
    return {k: v for k, v in metrics.items() if k not in PRIVATE}


class WriteMetrics(UserCallback):
    """Write rank 0's reported records to `<out>/metrics.jsonl` (and TensorBoard).

    A new worker group (a resubmitted run, or a restart after a failure) first drops the
    records after the step it resumed from (`resumed_from`). An evaluation record of a step
    that has one already (the resume point, evaluated again) is not written twice."""

    def __init__(self, out: str, total_steps: int, tensorboard: bool) -> None:
        self.out, self.total_steps, self.tensorboard = out, total_steps, tensorboard
        self.log: Any = None
        self.group: str | None = None
        self.last_step = 0
        self.eval_steps: set[int] = set()

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]],
                     checkpoint: Any) -> None:
        sent = metrics[0]
        if GROUP not in sent:
            return
        if sent[GROUP] != self.group:
            self.open(sent[GROUP], int(sent.get("resumed_from", 0)))
        # the training line; evaluation keys ride along for Tune (the latest evaluation) but
        # are written from EVALS, once per evaluated step
        record = {k: v for k, v in public(sent).items() if not k.startswith(EVAL_PREFIX)}
        if "step" in record and record["step"] > self.last_step:  # the final report repeats
            self.last_step = record["step"]                        # the last step's line
            self.log.append(record)
        for evaluation in sent[EVALS]:
            if evaluation["step"] not in self.eval_steps:
                self.eval_steps.add(evaluation["step"])
                self.log.append(evaluation)

    def open(self, group: str, resumed_from: int) -> None:
        from raysys.train.intrain_eval import logged_eval_steps
        from raysys.train.metrics import MetricsLog

        if self.log is not None:
            self.log.close()
        self.group, self.last_step = group, resumed_from
        self.log = MetricsLog(self.out, total_steps=self.total_steps, resume_step=resumed_from,
                              tensorboard=self.tensorboard)
        self.eval_steps = logged_eval_steps(self.log.path)


def last_training_record(run_dir: str | Path) -> dict[str, Any]:
    """The last record of metrics.jsonl with a loss ({} if none)."""
    path = Path(run_dir) / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    records = [json.loads(line) for line in lines if line.strip()]
    return next((r for r in reversed(records) if "loss" in r), {})


def user_error_of(error: BaseException) -> UserError | None:
    """The user error behind Ray Train's TrainingFailedError (a ControllerError raised by
    StopOnUserError, or a WorkerGroupError), else None."""
    cause = getattr(error, "controller_failure", None)
    if isinstance(cause, UserError):
        return cause
    return first_user_error(getattr(error, "worker_failures", None) or {})


def fit(trainer: Any) -> Any:
    """`trainer.fit()`; a user error raised on a worker is re-raised as itself (one message,
    exit 2 in the CLI and the jobs), any other failure as Ray Train raised it."""
    from ray.train import TrainingFailedError

    try:
        return trainer.fit()
    except TrainingFailedError as e:
        error = user_error_of(e)
        if error is None:
            raise
        raise error from None


TRACEBACK_LOGGER = "ray.train.v2._internal.util"  # logs "Error in training function:\n<tb>"


class _DropTrainingFunctionError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Error in training function")


def hide_worker_traceback() -> None:
    """In a training worker about to re-raise a user error: Ray Train's "Error in training
    function" log line (the whole traceback, echoed to the driver's console) is dropped; the
    error itself still reaches the driver, which prints its message."""
    logging.getLogger(TRACEBACK_LOGGER).addFilter(_DropTrainingFunctionError())
