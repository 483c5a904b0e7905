"""`raysys data inspect`: stream a whole archive through decoding and summarise it.

Writes `DIR/summary.json` (entities, views present / missing / bad, durations, sample rates,
image sizes, tabular column statistics, relevance) and `DIR/quarantine.parquet` (key, view,
path, reason, detail) for every record that could not be used. A view the manifest marks
missing (null) is not a bad record; a path that is given but cannot be read or decoded is.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import numpy as np
from tqdm import tqdm

from raysys.data import fs
from raysys.data.archive import ALL_ROWS_UNUSABLE, masked_cell_records, masked_cells
from raysys.data.config import DataConfig
from raysys.data.pipeline import Pipeline, open_archive
from raysys.data.quarantine import QuarantineLog, ratings_problem, ratings_share

VIEWS = ("audio", "image", "tabular")


def _describe(values: list[float]) -> dict[str, float] | None:
    a = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return None
    return {"count": int(a.size), "min": float(a.min()), "mean": float(a.mean()),
            "max": float(a.max())}


class _Tally:
    def __init__(self) -> None:
        self.present: Counter = Counter()
        self.seconds: list[float] = []
        self.rates: Counter = Counter()
        self.sizes: Counter = Counter()
        self.log_rows: list[float] = []
        self.entities = 0
        self.usable = 0

    def add(self, batch: dict[str, np.ndarray]) -> None:
        self.entities += len(batch["key"])
        any_view = np.zeros(len(batch["key"]), dtype=bool)
        for view in VIEWS:
            present = np.asarray(batch.get(f"{view}_present", np.zeros(len(batch["key"]), bool)))
            self.present[view] += int(present.sum())
            any_view |= present
        self.usable += int(any_view.sum())
        self.seconds += batch["info.audio_seconds"].tolist()
        self.rates.update(int(r) for r in batch["info.audio_rate"] if np.isfinite(r))
        for h, w in zip(batch["info.image_height"], batch["info.image_width"], strict=True):
            if np.isfinite(h):
                self.sizes[f"{int(h)}x{int(w)}"] += 1
        self.log_rows += batch["info.log_rows"].tolist()


def _views_summary(pipe: Any, tally: _Tally, q: QuarantineLog) -> dict[str, Any]:
    frame = pipe.entities.frame
    unusable_logs = sum(r.view == "tabular" and r.reason == ALL_ROWS_UNUSABLE
                        for r in pipe.info.bad)  # given, but quarantined: absent
    given = {
        "audio": int(frame["audio"].notna().sum()),
        "image": int(frame["image"].notna().sum()),
        "tabular": int(frame["has_logs"].sum()) + unusable_logs,
    }
    return {
        view: {
            "given": given[view],
            "missing": len(frame) - given[view],
            "present": int(tally.present[view]),
            "bad": int(q.bad[view]),
        }
        for view in VIEWS
        if view in pipe.cfg.modalities
    }


def summarise(pipe: Any, tally: _Tally, q: QuarantineLog, seconds: float) -> dict[str, Any]:
    info = pipe.info
    relevance = info.relevance.frame if info.relevance is not None else None
    return {
        "archive": info.root,
        "notes": list(pipe.notes),
        "entities": len(pipe.entities),
        "entities_usable": tally.usable,
        "split": pipe.entities.frame["split"].value_counts().to_dict(),
        "views": _views_summary(pipe, tally, q),
        "audio_seconds": _describe(tally.seconds),
        "audio_sample_rates": {str(k): v for k, v in sorted(tally.rates.items())},
        "image_sizes": dict(tally.sizes.most_common(10)),
        "log_rows_per_entity": _describe(tally.log_rows),
        "tabular_stats": pipe.stats.to_dict() if pipe.stats is not None else None,
        "masked_log_cells": masked_cells(info.logs),
        "relevance": None if relevance is None else {
            "rows": len(relevance),
            "queries": int(relevance["query"].nunique()),
            "rating": _describe(relevance["relevance"].tolist()),
        },
        "labels": list(info.manifest.labels.columns),
        "bad_records": q.total_bad,
        "records_attempted": q.total_attempted,
        "bad_fraction": q.bad_fraction,
        "bad_ratings": dict(zip(("bad", "of"), ratings_share(info), strict=True)),
        "bad_reasons": dict(Counter(f"{r.view}: {r.reason}" for r in q.records).most_common()),
        "max_bad_fraction": pipe.cfg.max_bad_fraction,
        "ok": q.bad_fraction <= pipe.cfg.max_bad_fraction and ratings_problem(
            info, pipe.cfg.max_bad_fraction) is None,
        "seconds": round(seconds, 2),
    }


def inspect_archive(
    archive: str, cfg: DataConfig, *, out_dir: str | None = None, progress: bool = True,
    pipe: Pipeline | None = None,
) -> dict[str, Any]:
    """Stream every entity once (no augmentation) and return the summary dict. `pipe`: the
    archive already opened with `open_archive(archive, cfg)` (the CLI opens it before Ray)."""
    start = time.perf_counter()
    pipe = pipe if pipe is not None else open_archive(archive, cfg)
    q = QuarantineLog()
    q.add_archive_records(pipe.info.bad)
    q.add_masked(masked_cell_records(pipe.info.logs))
    tally = _Tally()
    ds = pipe.dataset("all", augment=False, shuffle=False)
    bar = tqdm(total=len(pipe.entities), unit="entity", desc="inspect", disable=not progress)
    for batch in ds.iter_batches(batch_size=64, batch_format="numpy"):
        q.add_batch(batch)
        tally.add(batch)
        bar.update(len(batch["key"]))
    bar.close()
    summary = summarise(pipe, tally, q, time.perf_counter() - start)
    if out_dir:
        fs.write_bytes(fs.join(out_dir, "summary.json"), json.dumps(summary, indent=1).encode())
        q.write(fs.join(out_dir, "quarantine.parquet"))
    return summary


def print_summary(summary: dict[str, Any], *, out_dir: str | None = None) -> None:
    print(f"archive {summary['archive']}: {summary['entities']} entities "
          f"({summary['entities_usable']} with at least one usable view), split {summary['split']}")
    for note in summary.get("notes", []):
        print(f"note: {note}")
    print(f"{'view':<9}{'given':>8}{'missing':>9}{'present':>9}{'bad':>6}")
    for view, v in summary["views"].items():
        print(f"{view:<9}{v['given']:>8}{v['missing']:>9}{v['present']:>9}{v['bad']:>6}")
    if summary["audio_seconds"]:
        a = summary["audio_seconds"]
        print(f"audio: {a['min']:.2f}-{a['max']:.2f} s (mean {a['mean']:.2f}), "
              f"sample rates {summary['audio_sample_rates']}")
    if summary["image_sizes"]:
        print(f"images: {summary['image_sizes']}")
    for column, reasons in summary.get("masked_log_cells", {}).items():
        for reason, entry in reasons.items():
            print(f"logs: column {column!r}: {entry['count']} cells masked ({reason}), e.g. "
                  f"{'; '.join(entry['examples'])}")
    if summary["relevance"]:
        r = summary["relevance"]
        print(f"relevance: {r['rows']} ratings for {r['queries']} queries")
    print(f"bad records: {summary['bad_records']} of {summary['records_attempted']} "
          f"({summary['bad_fraction']:.1%}; limit {summary['max_bad_fraction']:.1%})")
    ratings = summary.get("bad_ratings", {"bad": 0, "of": 0})
    if ratings["of"]:
        print(f"bad relevance ratings: {ratings['bad']} of {ratings['of']} "
              f"({ratings['bad'] / ratings['of']:.1%}; limit {summary['max_bad_fraction']:.1%})")
    for reason, n in list(summary["bad_reasons"].items())[:8]:
        print(f"  {n:>5}  {reason}")
    if out_dir:
        written = [fs.join(out_dir, n) for n in ("summary.json", "quarantine.parquet")]
        print(f"wrote {written[0]} and {written[1]}")
    if not summary["ok"]:
        print("FAILED: bad share (of views or of ratings) above data.max_bad_fraction")
