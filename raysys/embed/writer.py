"""Driver side: collect streamed output rows per shard, write each shard once it is complete.

A shard is complete when every one of its entities has reported DONE; its rows are then sorted
by (key, view), de-duplicated (a retried task may deliver an entity twice) and written whole
(`store.write_table`: temporary name + rename, or one S3 PUT). Its quarantined records are
written first to `_quarantine/part-NNNNNN.parquet`, so a complete shard always has its
quarantine beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from raysys.data.archive import BadRecord, bad_records_table
from raysys.embed import store
from raysys.embed.embedder import DONE, EMBEDDED

ROW_COLUMNS = ("key", "view", "embedding", "model_id", "config_hash")


def embedding_type(dtype: str, dim: int) -> pa.DataType:
    return pa.list_(pa.float16() if dtype == "float16" else pa.float32(), dim)


def shard_table(rows: list[dict[str, Any]], *, dim: int, dtype: str, model_id: str,
                config_hash: str, keep_windows: bool) -> pa.Table:
    """Rows (sorted) -> the output schema: key, view, embedding, model_id, config_hash
    (+ window_embeddings, window_start_s with `audio.keep_windows`)."""
    np_dtype = np.float16 if dtype == "float16" else np.float32
    flat = np.asarray([r["embedding"] for r in rows], np_dtype).reshape(-1)
    etype = embedding_type(dtype, dim)
    columns: dict[str, pa.Array] = {
        "key": pa.array([r["key"] for r in rows], pa.string()),
        "view": pa.array([r["view"] for r in rows], pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(flat), dim),
        "model_id": pa.array([model_id] * len(rows), pa.string()),
        "config_hash": pa.array([config_hash] * len(rows), pa.string()),
    }
    if keep_windows:
        windows = [None if r["view"] != "audio" else
                   np.frombuffer(r["windows"], np.float32).reshape(-1, dim).astype(np_dtype)
                   for r in rows]
        columns["window_embeddings"] = pa.array(
            [None if w is None else list(w) for w in windows], pa.list_(etype))
        columns["window_start_s"] = pa.array(
            [None if r["view"] != "audio" else np.frombuffer(r["starts"], np.float32)
             for r in rows], pa.list_(pa.float32()))
    return pa.table(columns)


@dataclass
class ShardCollector:
    """Buffers rows of incomplete shards; writes a shard the moment its last entity arrives."""

    out: str
    expected: dict[int, int]  # shard -> entities
    table_args: dict[str, Any]
    rows: dict[int, dict[tuple[str, str], dict]] = field(default_factory=dict)
    bad: dict[int, dict[tuple[str, str], BadRecord]] = field(default_factory=dict)
    done: dict[int, set[str]] = field(default_factory=dict)
    written: dict[int, int] = field(default_factory=dict)  # shard -> rows
    quarantined: int = 0
    entities_done: int = 0
    stream_seconds: float = 0.0  # first batch to last (set by the job)
    first_batch_rows: int = 0  # rows of the first batch (not in the steady-state rate)

    def add(self, batch: dict[str, np.ndarray]) -> list[int]:
        """Take one streamed batch; returns the shards written because of it."""
        touched = set()
        for i in range(len(batch["key"])):
            shard, key, view = int(batch["shard"][i]), str(batch["key"][i]), str(batch["view"][i])
            kind = int(batch["kind"][i])
            if shard in self.written:
                continue  # a retried task re-delivered rows of a shard already written
            touched.add(shard)
            if kind == DONE:
                self.done.setdefault(shard, set()).add(key)
            elif kind == EMBEDDED:
                self.rows.setdefault(shard, {}).setdefault((key, view), {
                    "key": key, "view": view, "embedding": batch["embedding"][i],
                    "windows": batch["windows"][i], "starts": batch["starts"][i]})
            else:
                reason, _, detail = str(batch["error"][i]).partition(": ")
                self.bad.setdefault(shard, {}).setdefault(
                    (key, view), BadRecord(key, view, str(batch["path"][i]), reason, detail))
        complete = [s for s in sorted(touched)
                    if len(self.done.get(s, ())) == self.expected[s]]
        for shard in complete:
            self._write(shard)
        return complete

    def _write(self, shard: int) -> None:
        rows = [self.rows.get(shard, {})[k] for k in sorted(self.rows.get(shard, {}))]
        bad = [self.bad.get(shard, {})[k] for k in sorted(self.bad.get(shard, {}))]
        store.write_table(store.uri(self.out, f"{store.QUARANTINE_DIR}/"
                                    f"{store.shard_name(shard)}"), bad_records_table(bad))
        store.write_table(store.uri(self.out, store.shard_name(shard)),
                          shard_table(rows, **self.table_args))
        self.written[shard] = len(rows)
        self.quarantined += len(bad)
        self.entities_done += self.expected[shard]
        for buffers in (self.rows, self.bad, self.done):
            buffers.pop(shard, None)

    @property
    def rows_written(self) -> int:
        return sum(self.written.values())
