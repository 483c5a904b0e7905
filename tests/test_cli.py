"""The pretrain entry points: `raysys pretrain` and `jobs/pretrain.py` map their arguments to
config fields, and reject a bad value before any work starts. No training here."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from raysys import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")


def load_job_module():
    spec = importlib.util.spec_from_file_location("jobs_pretrain", ROOT / "jobs" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_job_help_lists_the_shorthands():
    done = subprocess.run([sys.executable, str(ROOT / "jobs" / "pretrain.py"), "--help"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    for flag in ("--config", "--archive", "--out", "--steps", "--address", "key=value"):
        assert flag in done.stdout


# Runs a job script in a checkout whose raysys is not installed: the editable install's finder
# is taken off sys.meta_path, so `import raysys` must come from the script's own checkout.
WITHOUT_INSTALL = """
import runpy, sys
sys.meta_path = [f for f in sys.meta_path
                 if not getattr(f, "__module__", "").startswith("__editable__")]
script = sys.argv[1]
sys.argv = [script, "--help"]
try:
    runpy.run_path(script, run_name="__main__")
except SystemExit:
    pass
print("raysys from", sys.modules["raysys"].__file__)
"""


@pytest.mark.parametrize("job", ["pretrain", "sweep", "embed"])
def test_job_scripts_import_raysys_from_their_checkout(job, tmp_path):
    shutil.copytree(ROOT / "jobs", tmp_path / "jobs")
    shutil.copytree(ROOT / "raysys", tmp_path / "raysys",
                    ignore=shutil.ignore_patterns("__pycache__"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", WITHOUT_INSTALL,
                           str(tmp_path / "jobs" / f"{job}.py")],
                          capture_output=True, text=True, timeout=120, cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "--archive" in done.stdout
    assert f"raysys from {tmp_path / 'raysys'}" in done.stdout


@pytest.mark.parametrize("parser", ["cli", "job"])
def test_shorthands_set_their_config_fields(parser):
    argv = ["--config", TINY, "--archive", "s3://bucket/arch", "--out", "/tmp/run-x",
            "--steps", "7", "train.lr=0.01", "data.batch_size=4"]
    if parser == "cli":
        args = cli.build_parser().parse_args(["pretrain", *argv])
    else:
        args = load_job_module().build_parser().parse_args(argv)
    cfg = cli.pretrain_config(args)
    assert cfg.archive == "s3://bucket/arch"
    assert cfg.out == "/tmp/run-x"
    assert cfg.train.steps == 7
    assert cfg.train.lr == 0.01 and cfg.data.batch_size == 4
    assert cfg.train.cpus_per_worker == 0.5  # from the config file
    assert args.address is None


def test_explicit_override_wins_over_shorthand():
    args = cli.build_parser().parse_args(["pretrain", "--config", TINY, "--steps", "7",
                                          "train.steps=9"])
    assert cli.pretrain_config(args).train.steps == 9


def test_without_shorthands_the_config_file_decides():
    args = cli.build_parser().parse_args(["pretrain", "--config", TINY])
    cfg = cli.pretrain_config(args)
    assert cfg.train.steps == 6 and cfg.archive == "raysys-demo/archive"


def test_address_is_parsed():
    args = cli.build_parser().parse_args(["pretrain", "--address", "ray://head:10001"])
    assert args.address == "ray://head:10001"


def test_bad_value_fails_before_ray_starts(capsys):
    import ray

    before = ray.is_initialized()  # another test may have started the session's Ray
    assert cli.main(["pretrain", "--config", TINY, "--steps", "0"]) == 2
    assert "train.steps" in capsys.readouterr().err
    assert load_job_module().main(["--config", TINY, "train.nope=1"]) == 2
    assert "train.nope: unknown key" in capsys.readouterr().err
    assert ray.is_initialized() == before


def test_demo_arguments():
    args = cli.build_parser().parse_args(["demo"])
    assert args.out == "raysys-demo" and args.entities == cli.DEMO_ENTITIES
    args = cli.build_parser().parse_args(["demo", "--out", "d", "--entities", "32",
                                          "train.steps=3"])
    assert (args.out, args.entities, args.overrides) == ("d", 32, ["train.steps=3"])
