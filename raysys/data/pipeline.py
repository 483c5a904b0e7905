"""The Ray Data pipeline: archive -> plan -> decode + views (parallel tasks) -> batches.

    pipe = open_archive("s3://bucket/archive", cfg.data)        # driver: validate, plan, stats
    ds = pipe.dataset("train", epochs=2)                        # a lazy ray.data.Dataset
    for batch in iter_hetero_batches(ds.iterator(), cfg.data.batch_size, quarantine=q):
        ...                                                     # HeteroBatch (torch)

Ray Train: pass `pipe.dataset(...)` as a TorchTrainer dataset and read it with
`ray.train.get_dataset_shard(name)` (streaming_split under the hood), or call
`ds.streaming_split(n, equal=True)` yourself. Row content depends only on (seed, key, epoch),
and with `preserve_order` the stream order only on the plan, so a run is reproducible for a
given seed and can restart at any stream position (`start=`).

What runs where: the driver reads the manifest, logs and relevance tables (small), computes
the tabular statistics in one pass and puts the cleaned logs into the object store once; Ray
tasks fetch and decode files and build the views. Logs must therefore fit in the object store.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raysys.data.archive import (
    LOGS_FILE,
    ArchiveError,
    ArchiveInfo,
    check_tables,
)
from raysys.data.batch import HeteroBatch
from raysys.data.config import DataConfig
from raysys.data.features import TabularStats
from raysys.data.plan import EntityTable, EpochPlan, Split
from raysys.data.quarantine import QuarantineLog
from raysys.data.rows import ERROR_PREFIX, INFO_COLUMNS, RowBuilder

# Columns the trainer does not need (diagnostics of the decode stage).
DIAGNOSTIC_COLUMNS = [
    *(f"{ERROR_PREFIX}{v}" for v in ("audio", "image", "tabular", "build")),
    "path.audio",
    "path.image",
    *INFO_COLUMNS,
]

def _build_rows(plan: pd.DataFrame, *, builder: RowBuilder) -> dict[str, np.ndarray]:
    return builder(plan)


def compute_tabular_stats(
    info: ArchiveInfo, cfg: DataConfig, train_keys: set[str]
) -> TabularStats | None:
    """Standardisation statistics and category vocabularies: one pass over the cleaned logs of
    the training entities (held-out entities never shape the preprocessing)."""
    if info.logs is None or "tabular" not in cfg.modalities:
        return None
    logs = info.logs
    frame = logs.frame[logs.frame["key"].isin(train_keys)]
    return TabularStats.from_frame(
        frame, logs.numeric_cols, logs.categorical_cols, max_vocab=cfg.tabular_max_vocab
    )


def dataset_of_frames(frames: list[pd.DataFrame]):
    """A Ray Dataset with one block per frame, built in this process.

    Not `ray.data.from_pandas`: it computes each block's metadata in a 1-CPU Ray task and
    waits for all of them, so a data-parallel rank that builds its stream while another
    rank's paused decode tasks hold the free CPUs waits forever (seen on 2 cores: 0.5 CPU
    free, a 1000-step plan, 878 metadata tasks queued). `from_blocks` reads the metadata
    here, without tasks."""
    import ray

    return ray.data.from_blocks(frames)


@dataclass
class Pipeline:
    """An opened archive: validated tables, the entity table, statistics and the logs ref."""

    cfg: DataConfig
    info: ArchiveInfo
    entities: EntityTable
    train_entities: EntityTable  # the train split as training sees it (data.withhold_views)
    stats: TabularStats | None
    _logs_ref: Any = None
    notes: list[str] = field(default_factory=list)  # archive-wide facts, said once by callers

    def _logs_handle(self) -> Any:
        if self.info.logs is None:
            return None
        if self._logs_ref is None:
            import ray

            self._logs_ref = ray.put(self.info.logs)
        return self._logs_ref

    def plan(self, split: Split = "train", *, epochs: int = 1, shuffle: bool = True) -> EpochPlan:
        table = self.train_entities if split == "train" else self.entities.select(split)
        return EpochPlan(table, epochs, self.cfg.seed, shuffle, group=self.cfg.relevance_group)

    def dataset(
        self,
        split: Split = "train",
        *,
        epochs: int = 1,
        start: int = 0,
        stop: int | None = None,
        augment: bool = True,
        shuffle: bool = True,
        rows_per_task: int | None = None,
        diagnostics: bool = True,
        shard: tuple[int, int, int] | None = None,
    ):
        """A lazy Ray Dataset of batch-contract rows for plan positions [start, stop).

        `shard=(rank, world_size, micro_batch)` keeps the rows of one data-parallel rank: the
        stream is cut into micro-batches of `micro_batch` rows dealt round-robin to the ranks,
        so step s of every rank is fixed by the plan alone (exact resume, no dynamic split).
        """

        cfg = self.cfg.model_copy(deep=True)
        cfg.augment.enabled = augment and cfg.augment.enabled
        plan = self.plan(split, epochs=epochs, shuffle=shuffle).rows(start=start, stop=stop)
        if shard is not None:
            rank, world, micro = shard
            plan = plan[(plan["position"].to_numpy() // micro) % world == rank]
            plan = plan.reset_index(drop=True)
        rows_per_task = rows_per_task or self.cfg.rows_per_task
        chunks = [plan.iloc[i : i + rows_per_task] for i in range(0, len(plan), rows_per_task)]
        ds = dataset_of_frames(chunks or [plan])
        ds.context.execution_options.preserve_order = True
        builder = RowBuilder(cfg, self.stats, self._logs_handle())
        cpus = 1.0 if self.cfg.decode_cpus == "auto" else self.cfg.decode_cpus
        ds = ds.map_batches(
            _build_rows,
            batch_format="pandas",
            batch_size=None,
            fn_kwargs={"builder": builder},
            concurrency=self.cfg.decode_concurrency,
            num_cpus=cpus,
        )
        if not diagnostics:
            ds = ds.drop_columns(DIAGNOSTIC_COLUMNS, num_cpus=cpus)  # not Ray's 1 CPU default
        return ds

    def save_stats(self, uri: str) -> None:
        """Save the tabular statistics with a run (JSON)."""
        import json

        from raysys.data import fs

        payload = self.stats.to_dict() if self.stats is not None else None
        fs.write_bytes(uri, json.dumps(payload, indent=1).encode())


def absent_modalities(info: ArchiveInfo, cfg: DataConfig) -> tuple[DataConfig, list[str]]:
    """`cfg` without the modalities the archive has no table for, and a note for each.

    An archive without logs.parquet has no tabular view for any entity: the modality is
    dropped (not a crash deep in a decode task). No modality left is an ArchiveError.
    """
    if info.logs is not None or "tabular" not in cfg.modalities:
        return cfg, []
    kept = [m for m in cfg.modalities if m != "tabular"]
    if not kept:
        raise ArchiveError(f"{info.root}: no {LOGS_FILE}, and data.modalities is [tabular]: "
                           "nothing to read")
    note = (f"{info.root} has no {LOGS_FILE}: the tabular modality is absent for every "
            f"entity (data.modalities now {kept})")
    return cfg.model_copy(update={"modalities": kept}, deep=True), [note]


def open_archive(archive: str, cfg: DataConfig, info: ArchiveInfo | None = None) -> Pipeline:
    """Validate the archive's tables and prepare the plan; decodes no media file. `info`: the
    tables already loaded by `raysys.data.archive.check_tables` (the CLI checks them before it
    imports torch and starts Ray).

    `Pipeline.cfg` is `cfg` less the modalities the archive lacks (`Pipeline.notes` says why).
    """
    if info is None:
        info = check_tables(archive, allow_outside=cfg.allow_outside_paths)
    cfg, notes = absent_modalities(info, cfg)
    entities = EntityTable.build(
        info, max_candidates=cfg.max_candidates, eval_fraction=cfg.eval_fraction, seed=cfg.seed
    )
    train = entities.select("train").for_training(
        cfg.modalities, withhold=cfg.withhold_views, incomplete=cfg.incomplete_entities,
        seed=cfg.seed)
    train_keys = set(train.frame.loc[train.frame["has_logs"], "key"])
    return Pipeline(cfg, info, entities, train, compute_tabular_stats(info, cfg, train_keys),
                    notes=notes)


def iter_hetero_batches(
    iterator: Any,
    batch_size: int,
    *,
    quarantine: QuarantineLog | None = None,
    max_bad_fraction: float | None = None,
    min_records: int = 64,
    drop_last: bool = False,
    prefetch_batches: int = 2,
) -> Iterator[HeteroBatch]:
    """HeteroBatches from a Dataset or DataIterator (e.g. a Ray Train shard).

    Bad records are counted into `quarantine`; with `max_bad_fraction` the stream stops with
    TooManyBadRecords once that share is passed (after `min_records`).
    """
    for batch in iterator.iter_batches(
        batch_size=batch_size,
        batch_format="numpy",
        drop_last=drop_last,
        prefetch_batches=prefetch_batches,
    ):
        if quarantine is not None:
            quarantine.add_batch(batch)
            if max_bad_fraction is not None:
                quarantine.check(max_bad_fraction, min_records=min_records)
        yield HeteroBatch.from_numpy(batch)
