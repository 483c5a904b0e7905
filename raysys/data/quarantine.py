"""Bad records: collected from the stream, counted, written to quarantine.parquet, and a guard
that stops a job once the bad share passes `data.max_bad_fraction`.

A record is one (key, view) whose location was given (a null in the manifest is a missing view,
not a bad record). Archive-level problems found before decoding (duplicate keys, bad paths,
relevance rows out of range) are `BadRecord`s from `raysys.data.archive` and are merged in.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from raysys.data import fs
from raysys.data.archive import ArchiveInfo, BadRecord, bad_records_table
from raysys.errors import UserError

STREAM_VIEWS = ("audio", "image", "tabular")


RATINGS = "relevance"  # BadRecord.view of bad relevance rows


class TooManyBadRecords(RuntimeError, UserError):
    """The bad share of records passed `data.max_bad_fraction`."""


def ratings_share(info: ArchiveInfo) -> tuple[int, int]:
    """(bad relevance ratings, ratings in relevance.parquet): bad ratings count in ratings."""
    bad = sum(r.view == RATINGS for r in info.bad)
    return bad, info.relevance.rows if info.relevance is not None else 0


def ratings_problem(info: ArchiveInfo, max_bad_fraction: float) -> str | None:
    """The message when the bad share of ratings passes the limit, else None. The one rule
    for `data inspect` (summary `ok`) and pretraining (refused before any worker starts)."""
    bad, total = ratings_share(info)
    if bad / max(total, 1) <= max_bad_fraction:
        return None
    where = info.relevance.path if info.relevance is not None else info.root
    return (f"{where}: {bad} of {total} relevance ratings are bad ({bad / total:.1%} > "
            f"data.max_bad_fraction={max_bad_fraction:.1%})")


def _split_reason(text: str) -> tuple[str, str]:
    reason, _, detail = text.partition(": ")
    return reason, detail


@dataclass
class QuarantineLog:
    """Bad records seen so far, and how many records were attempted per view."""

    records: list[BadRecord] = field(default_factory=list)
    attempted: Counter = field(default_factory=Counter)
    bad: Counter = field(default_factory=Counter)
    masked: list[BadRecord] = field(default_factory=list)  # masked log cells: not bad records

    def add_masked(self, records: list[BadRecord]) -> None:
        """Problems that were masked, not quarantined (text / +-inf log cells): written to
        quarantine.parquet, never counted as bad records."""
        self.masked.extend(records)

    def add_archive_records(self, records: list[BadRecord]) -> None:
        """Archive-level bad records. Bad relevance rows are counted in their own unit
        (ratings, see `ratings_share`), never against views."""
        for r in records:
            self.records.append(r)
            if r.view == RATINGS:
                continue
            self.bad[r.view] += 1
            self.attempted[r.view] += 1

    def add_batch(self, batch: Mapping[str, np.ndarray]) -> None:
        """Count the views a streamed batch attempted and keep the ones that failed."""
        keys = np.asarray(batch["key"])
        for view in STREAM_VIEWS:
            errors = np.asarray(batch.get(f"error.{view}", np.full(len(keys), "")))
            present = np.asarray(batch.get(f"{view}_present", np.zeros(len(keys), bool)))
            failed = errors != ""
            self.attempted[view] += int((present | failed).sum())
            paths = np.asarray(batch.get(f"path.{view}", np.full(len(keys), "")))
            for i in np.flatnonzero(failed):
                reason, detail = _split_reason(str(errors[i]))
                self.records.append(BadRecord(str(keys[i]), view, str(paths[i]), reason, detail))
                self.bad[view] += 1
        build = np.asarray(batch.get("error.build", np.full(len(keys), "")))
        for i in np.flatnonzero(build != ""):
            reason, detail = _split_reason(str(build[i]))
            self.records.append(BadRecord(str(keys[i]), "entity", "", reason, detail))
            self.bad["entity"] += 1

    @property
    def total_attempted(self) -> int:
        return sum(self.attempted.values())

    @property
    def total_bad(self) -> int:
        return sum(self.bad.values())

    @property
    def bad_fraction(self) -> float:
        return self.total_bad / max(self.total_attempted, 1)

    def check(self, max_bad_fraction: float, *, min_records: int = 0, where: str = "") -> None:
        """Raise TooManyBadRecords once at least `min_records` were seen and the share is over."""
        if self.total_attempted < min_records or self.bad_fraction <= max_bad_fraction:
            return
        top = Counter(r.reason for r in self.records).most_common(3)
        raise TooManyBadRecords(
            f"{where}{self.total_bad} of {self.total_attempted} records are bad "
            f"({self.bad_fraction:.1%} > data.max_bad_fraction={max_bad_fraction:.1%}); "
            f"most common reasons: {top}; e.g. {self.examples()}; fix or remove those files "
            f"or raise data.max_bad_fraction (`raysys data inspect` lists every bad record)"
        )

    def examples(self, n: int = 3) -> str:
        """The first `n` bad records as `path (view: reason)` (the key where there is no path)."""
        shown = [f"{r.path or r.key} ({r.view}: {r.reason})" for r in self.records[:n]]
        more = len(self.records) - n
        return ", ".join(shown) + (f" and {more} more" if more > 0 else "")

    def write(self, uri: str) -> None:
        """Write quarantine.parquet (key, view, path, reason, detail): the bad records, then
        the masked cells; an empty file if none."""
        fs.write_parquet(uri, bad_records_table(self.records + self.masked))
