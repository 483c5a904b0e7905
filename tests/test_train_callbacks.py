"""The controller-side callbacks of a training run (raysys.train.callbacks), fed the reports
Ray Train hands them: metrics.jsonl and TensorBoard written from rank 0's reports (on the
driver's node, where Ray places the controller), a restarted worker group's records replacing
the ones after its resume point, an evaluation record per step once; a worker's user error
picked out of Ray Train's failure. The end-to-end runs (tests/test_train_runs.py,
test_evaluate.py, test_demo_run.py) read the files these callbacks write."""

from __future__ import annotations

import json
from pathlib import Path

from raysys.data.quarantine import TooManyBadRecords
from raysys.train.callbacks import (
    EVALS,
    GROUP,
    WriteMetrics,
    last_training_record,
    payload,
    user_error_of,
)


def lines(run: Path) -> list[tuple[int, str]]:
    """(step, 'train'|'eval') per line of metrics.jsonl."""
    records = map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
    return [(r["step"], "eval" if "eval/x" in r else "train") for r in records]


def report(cb: WriteMetrics, group: str, step: int | None, resumed_from: int,
           evals: tuple[int, ...] = ()) -> None:
    record = {"resumed_from": resumed_from}
    if step is not None:
        record.update(step=step, time=1.0, loss=1.0 / step)
    sent = payload(record, group, [{"step": s, "time": 1.0, "eval/x": 0.5} for s in evals])
    other_rank = {"step": step, "loss": 9.0}  # never written: rank 0's report is
    cb.after_report(run_context=None, metrics=[sent, other_rank], checkpoint=None)


def test_reports_become_metrics_jsonl_and_tensorboard(tmp_path):
    cb = WriteMetrics(str(tmp_path), total_steps=4, tensorboard=True)
    report(cb, "a", 1, 0, evals=(0,))
    report(cb, "a", 2, 0)
    report(cb, "a", None, 0, evals=(2,))  # the last report: evaluations only
    assert lines(tmp_path) == [(1, "train"), (0, "eval"), (2, "train"), (2, "eval")]
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert GROUP not in record and EVALS not in record and record["loss"] == 1.0
    assert any((tmp_path / "tensorboard").iterdir())
    assert last_training_record(tmp_path)["step"] == 2


def test_a_restarted_group_replaces_the_records_after_its_resume_point(tmp_path):
    cb = WriteMetrics(str(tmp_path), total_steps=6, tensorboard=False)
    for step in (1, 2, 3):
        report(cb, "first", step, 0, evals=(step - 1,) if step % 2 else ())
    report(cb, "second", 3, 2, evals=(2,))  # restarted from the checkpoint of step 2
    report(cb, "second", 4, 2, evals=(4,))
    assert lines(tmp_path) == [(1, "train"), (0, "eval"), (2, "train"), (2, "eval"),
                               (3, "train"), (4, "train"), (4, "eval")]
    # a resubmitted run (a new callback) resuming at step 4 keeps what came before
    again = WriteMetrics(str(tmp_path), total_steps=6, tensorboard=False)
    report(again, "third", 5, 4, evals=(4,))
    assert lines(tmp_path)[-2:] == [(4, "eval"), (5, "train")]


def test_a_workers_user_error_is_found_in_rays_failure():
    from ray.train import ControllerError, WorkerGroupError

    error = TooManyBadRecords("3 of 10 records are bad")
    assert user_error_of(ControllerError(error)) is error
    assert user_error_of(WorkerGroupError("x", {0: ValueError("bug"), 1: error})) is error
    assert user_error_of(WorkerGroupError("x", {0: ValueError("bug")})) is None
