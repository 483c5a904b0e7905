"""Checks the driver runs before any Ray worker starts: a wrong run fails in seconds, naming
the config key, instead of after a worker group has been scheduled.

    probe_storage(uri, retries=3)      the checkpoint storage is reachable and writable
    check_resume(cfg, inputs, uri)     the latest checkpoint of the run fits this model config

Each raises `StorageUnreachable` / `IncompatibleCheckpoint`. Rules across config sections
are `RaysysConfig`'s own validator (raysys.config_rules): they fail when the config is loaded.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import pyarrow.fs as pafs

from raysys.config import ConfigError, RaysysConfig
from raysys.data import fs
from raysys.errors import UserError
from raysys.train.checkpoint import META_FILE, check_signature


class StorageUnreachable(RuntimeError, UserError):
    """The checkpoint storage could not be written after the configured retries."""


IN_RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray's job supervisor for a job's driver


def in_ray_job() -> bool:
    """True when this process is the driver of a `ray job submit` job."""
    return IN_RAY_JOB_ENV in os.environ


def resolve_paths(cfg: RaysysConfig) -> None:
    """Make `out`, a local `archive` and a local `train.storage_path` absolute, once, on the
    driver, so that every output of the run (metrics.jsonl and tensorboard/ written by the
    rank-0 worker, checkpoints, the export, summary.json) lands under one folder whatever the
    workers' working directories are.

    Under `ray job submit` a relative output path is refused: the driver's working directory
    is the job's unpacked `--working-dir`, a temporary folder Ray deletes later."""
    outputs = {"out": cfg.out, "train.storage_path": cfg.train.storage_path}
    if in_ray_job():
        relative = [f"{key}={value!r}" for key, value in outputs.items()
                    if value and _is_plain(value) and not os.path.isabs(value)]
        if relative:
            raise ConfigError(
                f"{', '.join(relative)}: a relative path under a Ray job would resolve inside "
                f"the job's temporary working dir ({os.getcwd()}), which Ray deletes; give an "
                "absolute path on the driver's node, or s3:// storage for checkpoints "
                "(train.storage_path)")
    cfg.out = fs.normalize(cfg.out)  # a remote `out` is refused by the config's rules
    if _is_plain(cfg.archive):
        cfg.archive = fs.normalize(cfg.archive)
    if cfg.train.storage_path and _is_plain(cfg.train.storage_path):
        cfg.train.storage_path = fs.normalize(cfg.train.storage_path)


def _is_plain(path: str) -> bool:
    """A local path without a scheme (not s3://, not file://)."""
    return fs.scheme_of(path) == ""


def storage_root(cfg: RaysysConfig) -> str:
    """Where checkpoints go: `train.storage_path`, else `<out>/checkpoints` (absolute)."""
    if cfg.train.storage_path:
        return fs.normalize(cfg.train.storage_path)
    return os.path.abspath(os.path.join(cfg.out, "checkpoints"))


def run_folder(cfg: RaysysConfig) -> str:
    """`<storage>/<run_name>`: the folder Ray Train writes this run's checkpoints into."""
    return fs.join(storage_root(cfg), cfg.train.run_name)


def probe_storage(uri: str, *, retries: int = 3, backoff_s: float = 0.5) -> None:
    """Write and delete a small file under `uri`, retrying transient errors with backoff."""
    probe = fs.join(uri, f".raysys-probe-{uuid.uuid4().hex[:8]}")

    def attempt() -> None:
        fs.write_bytes(probe, b"ok")
        filesystem, path = fs.resolve(probe)
        filesystem.delete_file(path)

    try:
        fs.retry_io(attempt, retries=retries, backoff_s=backoff_s,
                    transient=lambda e: isinstance(e, OSError))
    except Exception as exc:
        raise StorageUnreachable(
            f"train.storage_path: checkpoint storage {uri} is not writable after "
            f"{retries + 1} attempts: {type(exc).__name__}: {exc}"
        ) from exc


def latest_checkpoint_meta(run_uri: str) -> tuple[str, dict[str, Any]] | None:
    """(folder, raysys.json content) of the highest `step_*` checkpoint of a run, or None."""
    filesystem, path = fs.resolve(run_uri)
    if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
        return None
    infos = filesystem.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    steps = sorted((i.base_name for i in infos if i.type == pafs.FileType.Directory
                    and i.base_name.startswith("step_")), reverse=True)
    for name in steps:
        meta_uri = fs.join(run_uri, posixpath.join(name, META_FILE))
        try:
            return fs.join(run_uri, name), json.loads(fs.read_bytes(meta_uri))
        except FileNotFoundError:
            continue  # a folder still being written (or a foreign one): look further back
    return None


def check_resume(cfg: RaysysConfig, signature: dict[str, Any]) -> int:
    """Step of the checkpoint this run would resume from (0 = none); raises
    IncompatibleCheckpoint naming every differing field when it was written by another model."""
    found = latest_checkpoint_meta(run_folder(cfg))
    if found is None:
        return 0
    where, meta = found
    check_signature(meta["signature"], signature, where)
    return int(meta["step"])
