"""The first hour of a new user (issue 17): paths resolved once on the driver, runs the cluster
can never schedule refused at once, user errors before Ray starts as one message (exit 2),
keys without effect refused, a quiet console and a fast `--help`. No training run here (the
relative `--out` run is in test_train_runs.py)."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from raysys import cli
from raysys.config import ConfigError, load_config
from raysys.train import preflight

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


def no_ray(monkeypatch) -> None:
    import raysys.runtime

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(raysys.runtime, "init_ray", refuse)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    from raysys.data.demo import make_demo_archive

    root = tmp_path_factory.mktemp("first-hour") / "archive"
    make_demo_archive(str(root), entities=16, seed=3, missing_fraction=0.0)
    return str(root)


# -- 1. paths: resolved once, on the driver -----------------------------------------------------


def test_relative_paths_become_absolute_on_the_driver(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, ["out=run1", "archive=arch", "train.storage_path=ckpt"])
    preflight.resolve_paths(cfg)
    assert cfg.out == str(tmp_path / "run1") and cfg.archive == str(tmp_path / "arch")
    assert cfg.train.storage_path == str(tmp_path / "ckpt")
    cfg = load_config(None, ["out=/abs/run", "archive=s3://bucket/arch"])
    preflight.resolve_paths(cfg)
    assert (cfg.out, cfg.archive) == ("/abs/run", "s3://bucket/arch")


def test_relative_output_under_a_ray_job_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(preflight.IN_RAY_JOB_ENV, "{}")
    cfg = load_config(None, ["out=runs/a", "archive=arch"])
    with pytest.raises(ConfigError, match=r"out='runs/a': a relative path under a Ray job"):
        preflight.resolve_paths(cfg)
    cfg = load_config(None, [f"out={tmp_path}/a", "train.storage_path=s3://b/ckpt"])
    preflight.resolve_paths(cfg)  # absolute and remote paths are fine


# -- 2. resources: refused at once instead of waiting forever -------------------------------------


def test_defaults_fit_a_two_core_machine():
    from raysys.train.resources import Cluster, fit_resources

    cfg = load_config()
    fit = fit_resources(cfg, Cluster(cpus=2, gpus=0, node_cpus=[2]))
    assert (fit.cpus_per_worker, fit.decode_cpus) == (0.5, 0.5)
    big = fit_resources(cfg, Cluster(cpus=64, gpus=0, node_cpus=[32, 32]))
    assert (big.cpus_per_worker, big.decode_cpus) == (1.0, 1.0)


def test_a_run_that_can_never_be_scheduled_names_the_keys():
    from raysys.train.resources import Cluster, ResourceMismatch, fit_resources

    cfg = load_config(None, ["train.cpus_per_worker=1", "data.decode_cpus=1"])
    with pytest.raises(ResourceMismatch) as caught:
        fit_resources(cfg, Cluster(cpus=2, gpus=0, node_cpus=[2]))
    message = str(caught.value)
    for needle in ("needs 3 CPUs but the cluster has 2", "train.num_workers (2)",
                   "train.cpus_per_worker (1)", "data.decode_cpus (1)",
                   "this would fit: train.cpus_per_worker=0.5 data.decode_cpus=0.5"):
        assert needle in message, message
    gpu = load_config(None, ["train.use_gpu=true"])
    with pytest.raises(ResourceMismatch, match=r"train\.use_gpu=true asks for 2 GPUs .* has 0; "
                       "set train.use_gpu=false"):
        fit_resources(gpu, Cluster(cpus=8, gpus=0, node_cpus=[8]))
    fit_resources(gpu, Cluster(cpus=8, gpus=0, node_cpus=[8], max_cpus=64, max_gpus=8))


def test_use_gpu_without_gpus_fails_in_seconds(ray_session, demo, tmp_path, capsys):
    """Before: Ray repeated "No available node types can fulfill resource request" forever."""
    start = time.perf_counter()
    code = cli.main(["pretrain", "--config", TINY, "--archive", demo, "--out", str(tmp_path),
                     "train.use_gpu=true"])
    err = capsys.readouterr().err
    assert code == 2 and "train.use_gpu=true asks for 2 GPUs" in err, err
    assert time.perf_counter() - start < 30
    from raysys.train.resources import Cluster

    assert Cluster.current().cpus == 2


# -- 3. user errors: before Ray, one message, exit 2 --------------------------------------------


def test_bad_manifest_fails_pretrain_before_ray_with_one_message(demo, tmp_path, monkeypatch,
                                                                 capsys):
    from raysys.data import zoo

    root = zoo.copy_tables(demo, tmp_path / "broken")
    zoo.break_archive(root, "manifest-null-key")
    no_ray(monkeypatch)
    start = time.perf_counter()
    code = cli.main(["pretrain", "--config", TINY, "--archive", root, "--out",
                     str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "row 3: column 'key' is null or empty" in err, err
    assert "Traceback" not in err and time.perf_counter() - start < 10


@pytest.mark.parametrize(("override", "needle"), [
    ("train.checkpoint_every=700", "train.checkpoint_every (700) > train.steps"),
    ("out=s3://bucket/run", "out: the run folder must be a local path"),
    ("eval.every=2", "eval.every (2) > 0 needs held-out entities"),
])
def test_cross_section_rules_fail_when_the_config_loads(override, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, ["data.eval_fraction=0", override])


def test_misspelt_key_suggests_the_right_one(capsys):
    assert cli.main(["config", "show", "train.stepz=3"]) == 2
    assert "train.stepz: unknown key; did you mean `train.steps`?" in capsys.readouterr().err
    assert cli.main(["config", "show", "data.steps=3"]) == 2
    assert "did you mean `train.steps`?" in capsys.readouterr().err


def test_config_show_explain(capsys):
    assert cli.main(["config", "show", "--explain", "train.steps=50"]) == 0
    out = capsys.readouterr().out
    assert "train.steps = 50  (default 200)\n    optimizer steps of the whole run" in out
    assert 'train.cpus_per_worker = "auto"' in out and "data.batch_size = 32" in out


# -- 5. keys that have no effect are refused ---------------------------------------------------


def test_evaluate_refuses_keys_without_effect(tmp_path, capsys):
    code = cli.main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--archive", "x",
                     "data.eval_fraction=0.5", "eval.folds=3", "train.steps=3"])
    err = capsys.readouterr().err
    assert code == 2 and "data.eval_fraction, train.steps: no effect in `raysys evaluate`" in err


# -- 6. console ----------------------------------------------------------------------------------


def test_worker_lines_are_printed_once_under_ray_trains_print_patch(monkeypatch, capsys):
    """Ray Train patches `print` in its workers to log and echo; raysys's lines bypass it."""
    import builtins

    from ray.train.v2._internal.logging.patch_print import redirected_print

    from raysys.train.metrics import say

    handler = logging.StreamHandler(sys.stdout)  # the worker's console handler
    logging.getLogger().addHandler(handler)
    monkeypatch.setattr(builtins, "print", redirected_print)
    try:
        say("step 2/4")
    finally:
        logging.getLogger().removeHandler(handler)
    assert capsys.readouterr().out.count("[raysys] step 2/4") == 1


def test_step_lines_have_an_eta_and_records_wall_time(tmp_path, capsys):
    from raysys.train.metrics import MetricsLog, eta

    assert eta(10.0, 2, 6) == "ETA 0m30s" and eta(0.0, 0, 6) == "" and eta(5.0, 4, 0) == ""
    assert eta(3600.0, 1, 2) == "ETA 2h00m"
    log = MetricsLog(str(tmp_path), total_steps=10, tensorboard=False)
    before = time.time()
    log.log(2, {"loss": 1.0, "lr": 1e-3, "samples_per_s": 5.0})
    line = capsys.readouterr().out
    assert line.startswith("[raysys] step 2/10 loss 1.0000") and "ETA " in line
    record = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert before - 1 <= record["time"] <= time.time() + 1


def test_embed_rate_of_a_small_job_is_not_zero():
    from raysys.embed.job import embed_rate

    small = embed_rate(written=12, first_batch_rows=12, streamed_s=0.0, seconds=4.0)
    assert small == {"rows_per_s": 3.0,
                     "rows_per_s_over": "whole run (one batch: no steady state)"}
    assert embed_rate(100, 10, 3.0, 9.0)["rows_per_s"] == 30.0
    assert embed_rate(0, 0, 0.0, 1.0)["rows_per_s"] is None


def test_help_is_fast_uncut_and_there_is_a_version():
    code = ("import sys, time; t = time.perf_counter(); import raysys.cli as c; "
            "c.build_parser(); print(sorted(m for m in ('torch', 'ray', 'pandas', 'sklearn') "
            "if m in sys.modules)); print(time.perf_counter() - t)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    heavy, seconds = done.stdout.splitlines()
    assert heavy == "[]", heavy
    assert float(seconds) < 4.0  # was 5-6 s unloaded (torch, Ray, sklearn imported)
    helped = subprocess.run([sys.executable, "-m", "raysys.cli", "--help"], capture_output=True,
                            text=True, timeout=120, cwd=ROOT)
    assert "demo, embed, evaluate." in helped.stdout and "config show --explain" in helped.stdout
    version = subprocess.run([sys.executable, "-m", "raysys.cli", "--version"],
                             capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert version.stdout.strip() == "raysys 0.1.0"


def test_cli_corpus_names_match_the_builders():
    from raysys.corpora import BUILDERS

    assert tuple(sorted(BUILDERS)) == cli.CORPORA


def test_in_training_eval_without_labels_is_a_user_error(demo, tmp_path, monkeypatch, capsys):
    import pandas as pd

    from raysys.data import zoo

    root = zoo.copy_tables(demo, tmp_path / "nolabels")
    manifest = pd.read_parquet(f"{root}/manifest.parquet")
    manifest[["key", "audio", "image"]].to_parquet(f"{root}/manifest.parquet")
    no_ray(monkeypatch)
    code = cli.main(["pretrain", "--config", TINY, "--archive", root, "--out",
                     str(tmp_path / "run"), "eval.every=2"])
    err = capsys.readouterr().err
    assert code == 2 and "no categorical label column" in err and "eval.every=0" in err, err


def test_embed_refuses_actors_that_leave_no_cpu_for_preprocessing():
    from raysys.embed.config import EmbedConfig, EmbedError
    from raysys.embed.job import check_resources
    from raysys.train.resources import Cluster

    two = Cluster(cpus=2, gpus=0, node_cpus=[2])
    check_resources(EmbedConfig(), two)  # the defaults: 1 actor x 1 CPU + 1 decode CPU
    with pytest.raises(EmbedError, match=r"needs 3 CPUs but the cluster has 2: actors \(2\)"):
        check_resources(EmbedConfig(actors=2), two)


def test_embed_job_with_a_broken_archive_is_one_message(demo, tmp_path, monkeypatch, capsys):
    """jobs/embed.py calls raysys.embed.cli.main: an ArchiveError is exit 2, no traceback."""
    from test_embed_helpers import tiny_export

    from raysys.data import zoo
    from raysys.embed.cli import main

    tiny_export(demo, str(tmp_path / "model"))
    root = zoo.copy_tables(demo, tmp_path / "broken")
    zoo.break_archive(root, "manifest-null-key")
    no_ray(monkeypatch)
    code = main(["--checkpoint", str(tmp_path / "model"), "--archive", root, "--output",
                 str(tmp_path / "emb")])
    err = capsys.readouterr().err
    assert code == 2 and "row 3: column 'key' is null or empty" in err, err
