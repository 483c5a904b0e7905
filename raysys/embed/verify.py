"""`raysys embed --verify OUT --archive ARCHIVE`: completeness and uniqueness of an output.

Checks, reading only the key/view columns of the shards:
  - `_SUCCESS` exists and every shard it lists is present with its row count (and no others);
  - no (key, view) appears twice;
  - every (key, view) the archive holds (a manifest location, or log rows) for the job's views
    is either embedded or quarantined — never both, never neither;
  - no embedded key is unknown to the archive; every row carries the job's model_id.
"""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from raysys.data import fs
from raysys.data.archive import load_archive
from raysys.embed import store


def expected_records(archive: str, views: list[str]) -> set[tuple[str, str]]:
    """(key, view) pairs the archive has data for."""
    info = load_archive(archive)
    spans = info.logs.spans if info.logs is not None else {}
    out = set()
    for view in views:
        if view == "tabular":
            out |= {(k, view) for k in info.manifest.keys if k in spans}  # incl. unusable
        else:
            out |= {(k, view) for k, p in zip(info.manifest.keys, info.manifest.views[view],
                                              strict=True) if p is not None}
    return out


def _read_columns(target: str) -> Any:
    filesystem, path = fs.resolve(target)
    with filesystem.open_input_file(path) as f:
        return pq.read_table(f, columns=["key", "view", "model_id"])


def verify_output(out: str, archive: str) -> dict[str, Any]:
    """A report dict; `ok` is True only when every check passes (`problems` lists the rest)."""
    manifest = store.read_json(store.uri(out, store.SUCCESS_FILE))
    if manifest is None:
        return {"ok": False, "problems": [f"{out}: no {store.SUCCESS_FILE} (job not finished)"]}
    problems: list[str] = []
    listed = {s["file"]: s["rows"] for s in manifest["shards"]}
    present = {n for n in store.list_names(out) if store.SHARD_RE.match(n)}
    if present != set(listed):
        problems.append(f"shards missing: {sorted(set(listed) - present)[:5]}, "
                        f"unlisted: {sorted(present - set(listed))[:5]}")
    seen: dict[tuple[str, str], int] = {}
    for name in sorted(present & set(listed)):
        table = _read_columns(store.uri(out, name))
        if table.num_rows != listed[name]:
            problems.append(f"{name}: {table.num_rows} rows, manifest says {listed[name]}")
        if pc.any(pc.not_equal(table["model_id"], manifest["model_id"])).as_py():
            problems.append(f"{name}: rows of another model than {manifest['model_id']}")
        for pair in zip(table["key"].to_pylist(), table["view"].to_pylist(), strict=True):
            seen[pair] = seen.get(pair, 0) + 1
    duplicates = sorted(p for p, n in seen.items() if n > 1)
    quarantine = fs.read_parquet(store.uri(out, store.QUARANTINE_FILE))
    bad = set(zip(quarantine["key"].to_pylist(), quarantine["view"].to_pylist(), strict=True))
    expected = expected_records(archive, manifest["views"])
    missing = sorted(expected - set(seen) - bad)
    both = sorted(set(seen) & bad)
    unknown = sorted(set(seen) - expected)
    for label, items in (("duplicated", duplicates), ("missing", missing),
                         ("embedded and quarantined", both), ("not in the archive", unknown)):
        if items:
            problems.append(f"{len(items)} (key, view) {label}, e.g. {items[:3]}")
    return {"ok": not problems, "problems": problems, "rows": sum(seen.values()),
            "unique": len(seen), "expected": len(expected), "quarantined": len(bad & expected),
            "duplicates": len(duplicates), "missing": len(missing), "views": manifest["views"],
            "model_id": manifest["model_id"]}
