"""`raysys cluster check cluster.yaml [--config FILE] [key=value ...]`: validate a Ray cluster
launcher config offline, and check it against what a raysys run will ask for.

    Ray's own schema:  ray.autoscaler._private.util.prepare_config + validate_config
                       (misspelt keys, wrong types; no cloud calls)
    raysys's needs:    train.use_gpu -> GPU node types that can hold train.num_workers workers
                       (one GPU each); the project installed on every node; no relative
                       checkpoint storage

There is no `ray up --dry-run`; this is the offline check. Exit 0 ok, 2 a problem (named).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raysys.errors import UserError

# AWS instance families with NVIDIA GPUs (g4dn, g5, g6, p3, p4d, p5, ...): the launcher detects
# a node type's GPUs from its instance type when `resources` leaves them out.
GPU_INSTANCE_PREFIXES = ("g4dn.", "g5.", "g5g.", "g6.", "g6e.", "gr6.", "p3.", "p3dn.", "p4d.",
                         "p4de.", "p5.", "p5e.", "p5en.")


class ClusterConfigError(ValueError, UserError):
    """cluster.yaml is invalid, or cannot run the raysys config it is checked against."""


@dataclass(frozen=True)
class NodeType:
    name: str
    max_workers: int
    gpus: float | None  # None: not declared and not known from the instance type
    head: bool


def load_cluster_yaml(path: str | Path) -> dict[str, Any]:
    """The launcher config after Ray's own `prepare_config` + `validate_config`."""
    import logging

    import yaml
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler").setLevel(logging.WARNING)  # no "setting max workers"

    path = Path(path)
    if not path.is_file():
        raise ClusterConfigError(f"{path}: no such file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ClusterConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ClusterConfigError(f"{path}: top level must be a mapping")
    try:
        config = prepare_config(copy.deepcopy(raw))
        validate_config(config)
    except Exception as e:  # noqa: BLE001 - jsonschema / ValueError from Ray's checks
        first = str(e).split("\n\n")[0].strip()
        raise ClusterConfigError(f"{path}: Ray's launcher schema rejects it: {first}") from None
    return config


def node_types(config: dict[str, Any]) -> list[NodeType]:
    head = config.get("head_node_type")
    out = []
    for name, spec in config.get("available_node_types", {}).items():
        gpus = (spec.get("resources") or {}).get("GPU")
        instance = str((spec.get("node_config") or {}).get("InstanceType", ""))
        if gpus is None and instance:
            gpus = 1.0 if instance.startswith(GPU_INSTANCE_PREFIXES) else 0.0
        count = 1 if name == head else int(spec.get("max_workers", 0))
        out.append(NodeType(name, count, None if gpus is None else float(gpus), name == head))
    return out


def raysys_problems(config: dict[str, Any], cfg: Any) -> list[str]:
    """What a run of `cfg` (a RaysysConfig) needs that the cluster config lacks."""
    problems = []
    types = node_types(config)
    if cfg.train.use_gpu:
        gpus = sum((t.gpus or 0) * t.max_workers for t in types)
        unknown = [t.name for t in types if t.gpus is None]
        if gpus < cfg.train.num_workers and not unknown:
            problems.append(
                f"train.use_gpu=true with train.num_workers={cfg.train.num_workers} needs "
                f"{cfg.train.num_workers} GPUs, but the node types can bring {gpus:g} at most "
                "(max_workers x GPUs; add a GPU worker type or raise its max_workers)")
    commands = [*config.get("setup_commands", []), *config.get("head_setup_commands", []),
                *config.get("worker_setup_commands", [])]
    if not any("raysys" in c or ("pip install" in c and " -e " in f"{c} ") for c in commands):
        problems.append("no setup command installs raysys on the nodes (e.g. `pip install -e "
                        "~/raysys` with `file_mounts: {~/raysys: .}`)")
    storage = cfg.train.storage_path
    if storage is None or not storage.startswith("s3://"):
        problems.append("train.storage_path: checkpoints on a multi-node cluster need shared "
                        "storage (s3://...); a local folder exists on one node only")
    return problems


def check_cluster(path: str | Path, cfg: Any) -> list[str]:
    """Validate `path`; returns one summary line per node type, raises ClusterConfigError."""
    config = load_cluster_yaml(path)
    problems = raysys_problems(config, cfg)
    if problems:
        raise ClusterConfigError(f"{path}: valid for Ray, but not for this raysys config:\n  "
                                 + "\n  ".join(problems))
    return [f"{t.name}: {'head' if t.head else f'up to {t.max_workers} workers'}, "
            f"{'?' if t.gpus is None else f'{t.gpus:g}'} GPU each" for t in node_types(config)]
