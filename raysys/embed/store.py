"""The output folder of an embedding job (local or s3://) and how completed work is recognised.

    OUT/part-000000.parquet ...   one shard per fixed slice of the sorted entity keys
    OUT/_job.json                 the job's fingerprint (written first; a rerun must match it)
    OUT/_quarantine/part-*.parquet  bad records of each shard (written before the shard)
    OUT/_quarantine.parquet       all bad records (archive-level ones included), at the end
    OUT/_SUCCESS                  JSON manifest: shards and row counts (written last)

A shard file exists only once it is complete: local files are written under a hidden
temporary name (`.part-....tmp-PID`) and renamed; on S3 a shard is a single PUT. Names that
start with '.' or '_' are skipped by pyarrow/pandas dataset discovery, so
`pandas.read_parquet(OUT)` reads exactly the embedding shards.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raysys.data import fs

JOB_FILE, SUCCESS_FILE = "_job.json", "_SUCCESS"
QUARANTINE_DIR, QUARANTINE_FILE = "_quarantine", "_quarantine.parquet"
SHARD_RE = re.compile(r"^part-(\d{6})\.parquet$")


def shard_name(index: int) -> str:
    return f"part-{index:06d}.parquet"


def uri(out: str, name: str) -> str:
    return fs.join(out, name)


def atomic_write(target: str, data: bytes) -> None:
    """Write a whole file so that no partial file ever appears under `target`'s name.

    Local: a hidden temporary file in the same folder, fsync'ed, then renamed. S3: one PUT
    (S3 objects appear whole or not at all)."""
    filesystem, path = fs.resolve(target)
    if not isinstance(filesystem, pafs.LocalFileSystem):
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
        return
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_table(target: str, table: pa.Table) -> None:
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    atomic_write(target, buffer.getvalue())


def write_json(target: str, payload: dict) -> None:
    atomic_write(target, json.dumps(payload, indent=1, sort_keys=True).encode())


def read_json(target: str) -> dict | None:
    """The JSON content of a file, or None when it does not exist."""
    try:
        return json.loads(fs.read_bytes(target))
    except FileNotFoundError:
        return None


def list_names(folder: str) -> list[str]:
    """File names directly inside a folder or S3 prefix (empty when it does not exist)."""
    filesystem, path = fs.resolve(folder)
    selector = pafs.FileSelector(path, allow_not_found=True, recursive=False)
    return sorted(posixpath.basename(i.path) for i in filesystem.get_file_info(selector)
                  if i.type == pafs.FileType.File)


def complete_shards(out: str) -> list[int]:
    """Indices of the shards present under their final name (each one is complete)."""
    return sorted(int(m.group(1)) for n in list_names(out) if (m := SHARD_RE.match(n)))


def shard_rows(target: str) -> int:
    """Row count from the parquet footer (reads only the footer)."""
    filesystem, path = fs.resolve(target)
    with filesystem.open_input_file(path) as f:
        return pq.read_metadata(f).num_rows


def remove_stale_temporaries(out: str) -> int:
    """Delete hidden temporaries of a local OUT left by killed writers; returns how many.
    Only call when no other job writes to OUT."""
    if fs.is_remote(out):
        return 0
    removed = 0
    for folder in (fs.normalize(out), fs.join(out, QUARANTINE_DIR)):
        for name in list_names(folder):
            if name.startswith(".") and ".tmp-" in name:
                os.remove(os.path.join(folder, name))
                removed += 1
    return removed
