"""Ray Train callbacks of a run; they run in Ray Train's controller, which Ray places on the
driver's node.

`StopOnUserError`: a user error raised on a worker mid-run (TooManyBadRecords: the bad share
of the archive's records passed `data.max_bad_fraction`) ends the run at once instead of
restarting the worker group `train.max_failures` times (a restart reads the same bad files
again); `fit` turns it back into that error, so the command prints one message and exits 2.
On the worker, `hide_worker_traceback` keeps Ray Train from also logging that error's
traceback to the console.
"""

from __future__ import annotations

import logging
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
