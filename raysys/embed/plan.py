"""Before any work: load the export, match it against the archive, and plan deterministic shards.

Shard i holds the entities at positions [i * shard_entities, (i + 1) * shard_entities) of the
archive's unique keys sorted by key, so a rerun over the same archive plans the same shards
and can skip the ones already written.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raysys.data import fs
from raysys.data.archive import ArchiveInfo, BadRecord, load_archive
from raysys.data.config import DataConfig
from raysys.embed.config import EmbedConfig, EmbedError
from raysys.train.export import META_FILE, MODEL_FILE, build_model, config_hash, upgrade_meta

VIEWS = ("audio", "image", "tabular")


@dataclass
class Export:
    """An exported model as bytes (shipped to the actors through the object store) + meta."""

    model_bytes: bytes
    meta: dict[str, Any]

    @property
    def modalities(self) -> list[str]:
        return list(self.meta["inputs"]["modalities"])

    def data_config(self, views: list[str]) -> DataConfig:
        """The training data config as evaluation preprocessing: no augmentation, one view."""
        cfg = DataConfig.model_validate(self.meta["data"])
        cfg.augment.enabled = False
        cfg.views_per_modality = 1
        cfg.modalities = list(views)
        return cfg


def read_export(checkpoint: str) -> Export:
    """RUN/ or RUN/model/ (local or s3://): model.pt bytes and model.json."""
    for folder in (fs.join(checkpoint, "model"), fs.normalize(checkpoint)):
        meta_uri = fs.join(folder, META_FILE)
        if fs.exists(meta_uri):
            meta = upgrade_meta(json.loads(fs.read_bytes(meta_uri)))
            return Export(fs.read_bytes(fs.join(folder, MODEL_FILE)), meta)
    raise EmbedError(f"--checkpoint {checkpoint}: no {META_FILE} in it or in its model/ folder "
                     "(expected a raysys model export, RUN/model/)")


def archive_views(info: ArchiveInfo) -> list[str]:
    """Views the archive holds at least one record of."""
    have = [v for v in ("audio", "image") if any(p is not None for p in info.manifest.views[v])]
    if info.logs is not None and info.logs.spans:
        have.append("tabular")
    return have


def select_views(export: Export, info: ArchiveInfo, requested: list[str] | None) -> list[str]:
    """The views to embed; fails (naming both sides) when checkpoint and archive do not match."""
    model, archive = export.modalities, archive_views(info)
    if requested is None:
        views = [v for v in VIEWS if v in model and v in archive]
        if not views:
            raise EmbedError(f"checkpoint does not match the archive: the model embeds {model}, "
                             f"the archive {info.root} has {archive}; no view in common")
        return views
    not_model = [v for v in requested if v not in model]
    if not_model:
        raise EmbedError(f"--views {','.join(requested)}: the checkpoint has no encoder for "
                         f"{not_model} (it embeds {model})")
    not_archive = [v for v in requested if v not in archive]
    if not_archive:
        raise EmbedError(f"--views {','.join(requested)}: the archive {info.root} has no "
                         f"{not_archive} records (it has {archive})")
    return [v for v in VIEWS if v in requested]


def check_tabular(export: Export, info: ArchiveInfo) -> None:
    """The export's tabular statistics define the model's inputs: the archive's logs must have
    every column the model was trained on."""
    stats = export.meta.get("tabular_stats")
    if not stats:
        raise EmbedError("checkpoint embeds 'tabular' but its export has no tabular_stats")
    assert info.logs is not None
    have = set(info.logs.numeric_cols) | set(info.logs.categorical_cols)
    missing = [c for c in [*stats["numeric"], *stats["categories"]] if c not in have]
    if missing:
        raise EmbedError(f"checkpoint does not match the archive: its tabular view was trained "
                         f"on log columns {missing} that {info.logs.path} lacks")


@dataclass
class JobPlan:
    """Everything the driver decided before starting: views, shards, hashes."""

    export: Export
    info: ArchiveInfo
    views: list[str]
    entities: pd.DataFrame  # key, audio, image, has_logs, shard; sorted by key
    num_shards: int
    config_hash: str
    dim: int  # the size of the chosen head's (or branch's) embedding
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def model_id(self) -> str:
        return str(self.export.meta["model_id"])

    def shard_sizes(self) -> dict[int, int]:
        return self.entities.groupby("shard").size().astype(int).to_dict()

    def archive_bad(self) -> list[BadRecord]:
        """Archive-level bad records that concern an embedded view (or a whole entity)."""
        return [r for r in self.info.bad if r.view in (*self.views, "entity")]


def output_dim(export: Export, views: list[str], head: str) -> int:
    """The size of `head`'s embedding in every view (a head: `embed_dim`; a LOEV++ branch such
    as `pitch_shift_branch`: the encoder's width); fails when a view lacks it or sizes differ."""
    model = build_model(export.meta)
    dims = {view: model.embedding_dims(view) for view in views}
    lacking = [view for view in views if head not in dims[view]]
    if lacking:
        have = {view: list(d) for view, d in dims.items()}
        raise EmbedError(f"embed.head={head!r}: the checkpoint has no such output for {lacking}"
                         f" (it has {have}); choose another head or set embed.views")
    sizes = {view: dims[view][head] for view in views}
    if len(set(sizes.values())) > 1:
        raise EmbedError(f"embed.head={head!r} has a different size per view ({sizes}): embed "
                         "one view at a time (embed.views=[audio])")
    return next(iter(sizes.values()))


def entity_frame(info: ArchiveInfo, shard_entities: int) -> pd.DataFrame:
    """key, audio, image, has_logs, shard: one row per unique key, sorted. Logs the archive
    already reported as unusable (a tabular BadRecord) count as absent: they are quarantined."""
    m = info.manifest
    spans = info.logs.spans if info.logs is not None else {}
    bad_logs = {r.key for r in info.bad if r.view == "tabular"}
    frame = pd.DataFrame({"key": m.keys, "audio": m.views["audio"], "image": m.views["image"],
                          "has_logs": [k in spans and k not in bad_logs for k in m.keys]})
    frame = frame.sort_values("key", kind="stable").reset_index(drop=True)
    frame["shard"] = np.arange(len(frame), dtype=np.int64) // shard_entities
    return frame


def keys_digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def plan_job(checkpoint: str, archive: str, cfg: EmbedConfig) -> JobPlan:
    """Load export + archive, check they match, plan the shards. No Ray, no media decoding."""
    export = read_export(checkpoint)
    info = load_archive(archive)
    views = select_views(export, info, cfg.views)
    dim = output_dim(export, views, cfg.head)
    if "tabular" in views:
        check_tabular(export, info)
    entities = entity_frame(info, cfg.shard_entities)
    num_shards = int(entities["shard"].max()) + 1 if len(entities) else 0
    chash = config_hash({"export": export.meta["config_hash"], "views": views,
                         **cfg.output_settings()})
    fingerprint = {"model_id": export.meta["model_id"], "config_hash": chash, "views": views,
                   "keys": keys_digest(entities["key"].tolist()), "entities": len(entities),
                   "shard_entities": cfg.shard_entities, "num_shards": num_shards}
    return JobPlan(export, info, views, entities, num_shards, chash, dim, fingerprint)
