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
