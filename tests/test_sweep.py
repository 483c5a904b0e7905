"""`raysys sweep`: every bad input fails before any trial (exit 2, naming the key); real Ray
Tune sweeps of tiny pretraining runs: results, best.yaml, ASHA stopping a clearly bad trial,
and a sweep whose driver is killed after its first trial resumed to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from raysys.cli import main
from raysys.config import ConfigError, load_config
from raysys.train.resources import Cluster, ResourceMismatch
from raysys.tune.checks import concurrency, resolved_tree
from raysys.tune.space import dimensions
from raysys.tune.sweep import sweep_config

STEPS = 8
BASE = [f"train.steps={STEPS}", "train.log_every=2", "train.checkpoint_every=4",
        "train.warmup_steps=1", "eval.every=4", "data.eval_fraction=0.5",
        "eval.label_sets={label: label}", "eval.random_control=false",  # a quick evaluation
        "sweep.metric=eval/label/ncc", "sweep.grace_period=4"]
# the sweeps that test Tune's bookkeeping, not distributed training: one worker a trial, one
# trial at a time (what the killed-driver test waits for)
ONE_WORKER = ["train.num_workers=1", "sweep.max_concurrent_trials=1"]


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> str:
    from raysys.data.demo import make_demo_archive

    root = tmp_path_factory.mktemp("sweep") / "archive"
    make_demo_archive(str(root), entities=48, seed=0, missing_fraction=0.1)
    return str(root)


def overrides(archive: str, out: Path, *extra: str) -> list[str]:
    return [f"archive={archive}", f"out={out}", *BASE, *extra]


# -- bad input: before Ray ---------------------------------------------------------------------

LR = "sweep.space.train.lr={choice: [0.001, 0.01]}"


@pytest.mark.parametrize(("extra", "named"), [
    (["sweep.space.train.lrr={choice: [0.1]}"], "sweep.space.train.lrr: the config rejects"),
    (["sweep.space.train.lr={choice: [0, 0.1]}"], "sweep.space.train.lr: the config rejects"),
    (["sweep.space.objective.loev.weights.pitch={uniform: [0, 1]}"],
     "sweep.space.objective.loev.weights.pitch"),
    (["sweep.space.train.lr={uniform: [0.1, 0.1]}"], "train.lr: uniform: empty range"),
    (["sweep.space.train.steps={randint: [4, 4]}"], "train.steps: randint: empty range"),
    (["sweep.space.train.lr={choice: []}"], "train.lr: choice: empty list"),
    (["sweep.space.data.batch_size=default"], "sweep.space.data.batch_size: no default range"),
    ([], "sweep.space: empty"),
    ([LR, "sweep.metric=eval/label/probe"], "sweep.metric: 'eval/label/probe' is not reported"),
    ([LR, "sweep.metric=loss"], "sweep.metric: 'loss' is not reported"),
    ([LR, "eval.every=0"], "sweep.metric: trials report evaluation metrics only with"),
    ([LR, "sweep.grace_period=1"], "sweep.grace_period (1) < eval.every (4)"),
    ([LR, "sweep.space.objective.w_bin=default"], None),  # accepted
    (["sweep.space.train.lr=default", "sweep.search=grid"], "sweep.search=grid needs `choice`"),
    ([LR, "sweep.metric=[eval/label/knn, eval/coarse/knn]"], "needs sweep.search=optuna"),
])
def test_bad_space_or_metric_fails_before_ray(archive, tmp_path, extra, named):
    if named is None:
        tree, cfg = sweep_config(None, overrides(archive, tmp_path / "s", *extra))
        assert dimensions(cfg.sweep)["objective.w_bin"].loguniform == (0.1, 10.0)
        return
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[")):
        sweep_config(None, overrides(archive, tmp_path / "s", *extra))


def test_cli_exit_2_before_any_trial(archive, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(["sweep", "--out", str(out), *overrides(archive, out, "sweep.space.nope.x="
                                                       "{choice: [1]}")])
    assert rc == 2 and "sweep.space.nope.x" in capsys.readouterr().err
    assert not out.exists()  # nothing started
    assert main(["sweep", "--resume", str(tmp_path / "missing")]) == 2


def test_relative_sweep_folder_under_a_ray_job_is_refused(archive, monkeypatch):
    from raysys.train.preflight import IN_RAY_JOB_ENV

    monkeypatch.setenv(IN_RAY_JOB_ENV, "{}")
    with pytest.raises(ConfigError, match="out='sweeps/a': a relative path under a Ray job"):
        sweep_config(None, [f"archive={archive}", "out=sweeps/a", *BASE, LR])


def cluster(cpus: float) -> Cluster:
    return Cluster(cpus=cpus, gpus=0.0, node_cpus=[cpus])


def test_max_concurrent_trials_against_the_cluster(archive, tmp_path):
    cfg = load_config("configs/tiny.yaml", overrides(archive, tmp_path, LR))
    assert concurrency(cfg, cluster(2.0)) == 1  # 1 CPU of workers + 0.5 of a decode task
    assert concurrency(cfg, cluster(8.0)) == 5
    cfg.sweep.max_concurrent_trials = 2
    with pytest.raises(ConfigError, match="sweep.max_concurrent_trials: 2 trials need"):
        concurrency(cfg, cluster(2.0))
    cfg.sweep.max_concurrent_trials = "auto"
    cfg.train.num_workers, cfg.train.cpus_per_worker = 1, 1.0  # the run fits, a trial does not
    cfg.sweep.trial_cpus = 0.5  # (its driver function's CPU on top)
    with pytest.raises(ConfigError, match="no trial can be scheduled"):
        concurrency(cfg, cluster(1.5))
    cfg.sweep.trial_cpus = 0.0
    cfg.train.num_workers = 4
    with pytest.raises(ResourceMismatch, match="train.num_workers"):
        concurrency(cfg, cluster(2.0))


def test_auto_cpus_resolved_as_the_trials_will(archive, tmp_path):
    """`auto` (main's default) resolves as in pretrain: on 2 CPUs one trial fits; every
    trial gets the resolved numbers; best.yaml keeps `auto`."""
    tree, cfg = sweep_config(None, overrides(archive, tmp_path / "s", LR))
    assert cfg.train.cpus_per_worker == "auto" == cfg.data.decode_cpus
    assert concurrency(cfg, cluster(2.0)) == 1
    assert concurrency(cfg, cluster(16.0)) == 5  # 2 x 1 worker CPU + 1 decode/metadata CPU
    base = resolved_tree(tree, cfg, cluster(2.0))
    assert (base["train"]["cpus_per_worker"], base["data"]["decode_cpus"]) == (0.5, 0.5)
    assert "cpus_per_worker" not in tree.get("train", {})  # sweep.yaml keeps `auto`


def test_pareto_front_and_progress_line():
    import numpy as np

    from raysys.tune.progress import progress_line
    from raysys.tune.results import pareto_front

    values = np.array([[0.9, 0.1], [0.5, 0.5], [0.4, 0.4], [0.1, 0.9], [0.9, 0.05]])
    assert pareto_front(values, ["max", "max"]).tolist() == [0, 1, 3]
    assert pareto_front(values, ["max", "min"]).tolist() == [4]  # [0.9, 0.05] dominates
    line = progress_line(["completed", "stopped", "running", "pending"], 4, 120.0)
    assert "2 done (1 stopped early), 1 running, 0 failed, 1 pending of 4" in line
    assert "ETA ~2m00s" in line


# -- real sweeps (Ray Tune on the session's local instance) -------------------------------------

GRID = ["sweep.search=grid", "sweep.num_samples=1", "sweep.reduction_factor=2"]
ASHA_STEPS = 12


@pytest.mark.slow
def test_sweep_end_to_end_asha_stops_a_bad_trial(ray_session, archive, tmp_path):
    """3 trials in grid order, one worker each (Tune's bookkeeping is tested, not distributed
    training): learning rates 1e-3, 5e-2 and 1e30. On this tiny archive the out-of-fold
    eval/label/ncc of step 4 is 0.500 at 1e-3 and 0.292 at 5e-2 (session 17):
    ASHA stops the 5e-2 trial at its first rung. `eval.wait` makes the report of step 4 carry
    the evaluation of step 4 (asynchronous, it could arrive after training ended on a loaded
    machine, and the trial then completed: CI, 2026-12-02). 1e30 passes every check
    but its weights overflow after the first update: the trial fails during training
    (train.nonfinite=stop) and is recorded with its error; the sweep goes on. Results,
    history, best.yaml (loadable as is) and plots are written."""
    from raysys.tune.sweep import run_sweep

    out = tmp_path / "s"
    tree, cfg = sweep_config("configs/tiny.yaml", overrides(
        archive, out, *GRID, *ONE_WORKER, "train.nonfinite=stop", "train.max_failures=0",
        "eval.wait=true", f"train.steps={ASHA_STEPS}",
        "sweep.space.train.lr={choice: [1.0e-3, 5.0e-2, 1.0e+30]}"))
    summary = run_sweep(tree, cfg)
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 3 and (out / "results.csv").exists()
    by_lr = results.set_index("config/train.lr")
    assert by_lr.loc[1e30, "state"] == "error" and by_lr.loc[1e30, "steps"] < ASHA_STEPS
    assert by_lr.loc[1e30, "error"].startswith("NonFiniteLoss: step ")  # not Ray's wrappers
    assert summary["states"]["error"] == 1
    assert by_lr.loc[5e-2, "state"] == "stopped" and by_lr.loc[5e-2, "steps"] < ASHA_STEPS
    assert by_lr.loc[1e-3, "state"] == "completed" and by_lr.loc[1e-3, "steps"] == ASHA_STEPS
    history = pd.read_parquet(out / "history.parquet")
    reported = set(results.loc[results["state"] != "error", "trial_id"])
    assert reported <= set(history["trial_id"]) <= set(results["trial_id"])  # failed: step 2
    assert history["eval/label/ncc"].notna().any()
    best = load_config(out / "best.yaml")  # a ready `raysys pretrain` config, as is (rules too)
    assert by_lr.loc[best.train.lr, "state"] == "completed" and summary["best_trials"]
    assert (Path(by_lr.loc[best.train.lr, "run"]) / "model").is_dir()  # a full run: exported
    assert (out / "plots" / "metric_over_steps.png").exists()
    assert (out / "plots" / "metric_vs_train_lr.png").exists()


def _wait_for(predicate, timeout: float, proc: subprocess.Popen) -> None:
    start = time.time()
    while not predicate():
        assert proc.poll() is None, "the sweep ended before it was killed"
        assert time.time() - start < timeout, "timed out"
        time.sleep(1)


@pytest.mark.slow
def test_killed_sweep_resumes_every_trial_once(ray_session, archive, tmp_path):
    """Random search (the default): the driver (a subprocess joined to this Ray instance) is
    killed once its first trial has finished and the second trains; `--resume` finishes the
    second (resumed from its checkpoint when it had one), does not repeat the first and
    samples no third."""
    from raysys.tune.sweep import resume_sweep

    out = tmp_path / "s"
    env = {**os.environ, "RAY_ADDRESS": ray_session.get_runtime_context().gcs_address,
           "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "raysys.cli", "sweep", "--config", "configs/tiny.yaml",
           "--out", str(out), *overrides(archive, out, "sweep.search=random",
                                         "sweep.num_samples=2", "sweep.scheduler=none",
                                         *ONE_WORKER,
                                         "sweep.space.train.lr={loguniform: [0.001, 0.01]}")]
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:  # kill once the second trial starts (Tune has recorded the first as finished);
        # its config.yaml is written before training, metrics.jsonl only at its first report,
        # by when a loaded machine may have run all 8 steps
        second = lambda: len(list((out / "trials").glob("*/config.yaml"))) >= 2  # noqa: E731
        _wait_for(second, 900, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    first = next((out / "trials").glob("*/summary.json"))
    stamp = first.stat().st_mtime
    time.sleep(5)  # the killed driver's trial actors go with it
    summary = resume_sweep(str(out))
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 2 and set(results["state"]) == {"completed"}
    assert results["config/train.lr"].between(0.001, 0.01).all()
    assert results["config/train.lr"].nunique() == 2  # sampled, not a grid
    assert first.stat().st_mtime == stamp  # the finished trial did not run again
    for run in results["run"]:
        steps = [json.loads(line)["step"] for line in
                 (Path(run) / "metrics.jsonl").read_text().splitlines()
                 if "loss" in json.loads(line)]
        assert steps == sorted(set(steps)) and steps[-1] == STEPS  # each step logged once
    assert summary["trials"] == 2


@pytest.mark.slow
def test_optuna_multi_objective_returns_the_pareto_front(ray_session, archive, tmp_path):
    """Optuna's multi-objective TPE over binary retrieval (R@1) vs graded retrieval (nDCG@10)
    (2 trials, no ASHA): one best-N.yaml per Pareto point of the finished trials, each a
    loadable pretrain config, and the front plot."""
    from raysys.tune.results import pareto_front
    from raysys.tune.sweep import run_sweep

    out, metrics = tmp_path / "s", ["eval/retrieval/audio->image/R@1",
                                  "eval/relevance/nDCG@10"]
    tree, cfg = sweep_config("configs/tiny.yaml", overrides(
        archive, out, "sweep.search=optuna", "sweep.scheduler=none", "sweep.num_samples=2",
        f"sweep.metric=[{', '.join(metrics)}]", "sweep.mode=[max, max]", *ONE_WORKER,
        "sweep.space.train.lr={loguniform: [0.0001, 0.05]}"))
    summary = run_sweep(tree, cfg)
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == 2 and set(results["state"]) == {"completed"}
    assert results["config/train.lr"].between(1e-4, 0.05).all()
    assert results[metrics].notna().all().all()
    front = results.iloc[pareto_front(results[metrics].to_numpy(float), ["max", "max"])]
    assert sorted(summary["best_trials"]) == sorted(front["trial_id"])
    files = sorted(out.glob("best-*.yaml"))
    assert len(files) == len(front) and not (out / "best.yaml").exists()
    lrs = {load_config(f).train.lr for f in files}  # each a ready pretrain config
    assert lrs == set(front["config/train.lr"])
    assert (out / "plots" / "pareto.png").exists()


def test_optuna_is_given_only_reports_with_the_metric():
    """A trial reports before its first evaluation has finished (no metric yet): Ray's
    OptunaSearch would raise KeyError on such a report and end the sweep; ours skips it and
    gives Optuna the evaluated reports and the final result."""
    import optuna
    from ray import tune

    from raysys.tune.optuna_search import EvaluatedOptunaSearch

    storage, metric = optuna.storages.InMemoryStorage(), "eval/label/knn"
    search = EvaluatedOptunaSearch(space={"train.lr": tune.loguniform(1e-4, 1e-2)},
                                   metric=metric, mode="max", study_name="s", storage=storage,
                                   sampler=optuna.samplers.TPESampler(seed=0))
    assert 1e-4 <= search.suggest("t1")["train.lr"] <= 1e-2
    search.on_trial_result("t1", {"step": 2, "training_iteration": 1, "loss": 3.0})
    search.on_trial_result("t1", {"step": 4, "training_iteration": 2, metric: 0.5})
    search.on_trial_complete("t1", {"step": 8, "training_iteration": 3, metric: 0.6})
    (trial,) = optuna.load_study(study_name="s", storage=storage).trials
    assert trial.intermediate_values == {2: 0.5} and trial.value == 0.6


def test_trial_id_of_a_restored_trial_folder():
    """A trial restored before Tune recorded its folder trains in trials/<id> but reports from
    a Tune folder `<id>_xxxx`: results point at the run folder it trained in."""
    from raysys.tune.results import trial_id_of

    assert trial_id_of("63335_00001_ecfb", {"trial_id": "63335_00001"}) == "63335_00001"
    assert trial_id_of("63335_00001_ecfb", {}) == "63335_00001"  # failed before any report
    assert trial_id_of("63335_00001", None) == "63335_00001"
