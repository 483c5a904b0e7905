"""Checks the driver runs before any Ray worker starts: a wrong run fails in seconds, naming
the config key, instead of after a worker group has been scheduled.

    check_run_config(cfg)              rules across objective x train x data (model x objective
                                       ones are in `RaysysConfig`'s own validator)
    probe_storage(uri, retries=3)      the checkpoint storage is reachable and writable
    check_resume(cfg, inputs, uri)     the latest checkpoint of the run fits this model config

Each raises `ConfigError` (config) or `StorageUnreachable` / `IncompatibleCheckpoint`.
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
from raysys.train.checkpoint import META_FILE, check_signature


class StorageUnreachable(RuntimeError):
    """The checkpoint storage could not be written after the configured retries."""


def storage_root(cfg: RaysysConfig) -> str:
    """Where checkpoints go: `train.storage_path`, else `<out>/checkpoints` (absolute)."""
    if cfg.train.storage_path:
        return fs.normalize(cfg.train.storage_path)
    return os.path.abspath(os.path.join(cfg.out, "checkpoints"))


def run_folder(cfg: RaysysConfig) -> str:
    """`<storage>/<run_name>`: the folder Ray Train writes this run's checkpoints into."""
    return fs.join(storage_root(cfg), cfg.train.run_name)


def config_errors(cfg: RaysysConfig) -> list[str]:
    """Every cross-section rule this config breaks, each naming its dotted key."""
    neg, t, obj = cfg.objective.negatives, cfg.train, cfg.objective
    errors = []
    if neg.grad_cache_sub_batch is not None and neg.grad_cache_sub_batch >= cfg.data.batch_size:
        errors.append(f"objective.negatives.grad_cache_sub_batch ({neg.grad_cache_sub_batch}) >= "
                      f"data.batch_size ({cfg.data.batch_size}): a micro-batch would be one "
                      "sub-batch and caching would only add a second forward; set it below "
                      "data.batch_size (or null for no gradient caching)")
    if neg.momentum is not None and not neg.queue_size:
        errors.append("objective.negatives.momentum: the momentum encoder only produces queue "
                      "keys; set objective.negatives.queue_size > 0 (or momentum: null)")
    if obj.w_cont > 0 and cfg.data.max_candidates < 1:
        errors.append("objective.w_cont: the ListNet term needs data.max_candidates >= 1")
    if t.nonfinite == "skip" and t.grad_accum > 1:
        errors.append("train.nonfinite: 'skip' needs train.grad_accum=1 (a non-finite "
                      "micro-batch cannot be taken out of a partly accumulated DeepSpeed step); "
                      "use train.nonfinite=stop or train.grad_accum=1")
    if t.checkpoint_every > t.steps:
        errors.append(f"train.checkpoint_every ({t.checkpoint_every}) > train.steps ({t.steps}):"
                      " only the final checkpoint would be written; lower it")
    return errors


def check_run_config(cfg: RaysysConfig) -> None:
    """Raise ConfigError listing every cross-section problem (before Ray is touched)."""
    errors = config_errors(cfg)
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(errors))


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
