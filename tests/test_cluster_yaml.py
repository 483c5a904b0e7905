"""cluster.yaml validates offline with Ray's own launcher schema (no cloud calls)."""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_yaml_validates(raw):
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    assert config["provider"]["type"] == "aws"
    assert config["head_node_type"] in config["available_node_types"]
    workers = [t for name, t in config["available_node_types"].items()
               if name != config["head_node_type"]]
    assert workers and all(t["max_workers"] >= 1 for t in workers)
    # setup installs the project from the synced checkout on every node
    assert any("pip install" in c and "-e ." in c for c in config["worker_setup_commands"])
    assert any("pip install" in c and "-e ." in c for c in config["head_setup_commands"])
    assert "~/raysys" in config["file_mounts"]


def test_a_misspelt_key_fails_validation(raw):
    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["max_worker"] = 4  # typo of max_workers
    with pytest.raises(jsonschema.ValidationError):
        validate_config(prepare_config(bad))


# -- `raysys cluster check` (issue 17): the same validation for users, plus raysys's needs ------


def run_check(args: list[str], capsys) -> tuple[int, str]:
    from raysys.cli import main

    code = main(["cluster", "check", str(CLUSTER_YAML), *args])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_cluster_check_accepts_the_shipped_yaml_for_a_gpu_run(capsys):
    code, out = run_check(["train.use_gpu=true", "train.num_workers=4",
                           "train.storage_path=s3://bucket/ckpt"], capsys)
    assert code == 0, out
    assert "gpu_worker: up to 4 workers, 1 GPU each" in out and "cluster.yaml: ok" in out


def test_cluster_check_names_what_the_run_lacks(capsys):
    code, out = run_check(["train.use_gpu=true", "train.num_workers=8"], capsys)
    assert code == 2 and "Traceback" not in out
    assert "train.use_gpu=true with train.num_workers=8 needs 8 GPUs" in out
    assert "train.storage_path: checkpoints on a multi-node cluster need shared storage" in out


def test_cluster_check_reports_ray_schema_errors(raw, tmp_path, capsys):
    from raysys.cli import main

    bad = copy.deepcopy(raw)
    bad["available_node_types"]["gpu_worker"]["max_worker"] = 4
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(bad))
    assert main(["cluster", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Ray's launcher schema rejects it" in err and "max_worker" in err, err
