"""Loading and validating an archive (docs/archive-format.md): manifest, logs, relevance.

Structural problems (no manifest, a missing or mistyped column, a null key) fail fast with an
`ArchiveError` naming the file, column and row. Problems with single records (a duplicate key,
an unparseable path, a rating outside 0-100, a key whose log rows are all unusable) become
`BadRecord`s: reported and quarantined, never fatal. No Ray here: the driver loads the archive
once and the pipeline ships the resolved table to its workers.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.types as pat

from raysys.data import fs
from raysys.data.decode import ALL_ROWS_UNUSABLE, LogProblem, clean_log_rows
from raysys.errors import UserError

MANIFEST_FILES = ("manifest.parquet", "manifest.csv")
LOGS_FILE = "logs.parquet"
RELEVANCE_FILE = "relevance.parquet"
FILE_VIEWS = ("audio", "image")  # manifest columns holding file locations
VIEWS = ("audio", "image", "tabular")
ENTITY = "entity"  # BadRecord.view of record-level problems (duplicate key)
DUPLICATE_KEY = "duplicate key"
BAD_PATH = "bad path"
OUTSIDE_ARCHIVE = "outside the archive"
UNKNOWN_KEY = "key not in manifest"


class ArchiveError(ValueError, UserError):
    """The archive is malformed; the message names the file, column and (1-based) row."""


@dataclass(frozen=True)
class BadRecord:
    """One (key, view) that cannot be used. `reason` is short and fixed; `detail` free text."""

    key: str
    view: str  # audio | image | tabular | relevance | entity
    path: str
    reason: str
    detail: str = ""


def bad_records_table(records: list[BadRecord]) -> pa.Table:
    """Quarantine rows as an Arrow table (string columns key, view, path, reason, detail)."""
    names = ("key", "view", "path", "reason", "detail")
    rows = [asdict(r) for r in records]
    return pa.table({n: pa.array([r[n] for r in rows], type=pa.string()) for n in names})


def _is_text(t: pa.DataType) -> bool:
    if pat.is_dictionary(t):
        return _is_text(t.value_type)
    return pat.is_string(t) or pat.is_large_string(t) or pat.is_null(t)


def _is_number(t: pa.DataType) -> bool:
    return pat.is_integer(t) or pat.is_floating(t) or pat.is_boolean(t) or pat.is_decimal(t)


def _require_text(table: pa.Table, column: str, where: str) -> None:
    if column not in table.column_names:
        raise ArchiveError(f"{where}: missing column {column!r} (has {table.column_names})")
    kind = table.schema.field(column).type
    if not _is_text(kind):
        raise ArchiveError(f"{where}: column {column!r} must be string, got {kind}")


def _first_null_row(values: pd.Series) -> int | None:
    """1-based data row of the first null / empty string, or None."""
    bad = values.isna().to_numpy() | (values.astype("string").str.strip() == "").fillna(True)
    rows = np.flatnonzero(np.asarray(bad))
    return int(rows[0]) + 1 if len(rows) else None


def _read_table(uri: str) -> pa.Table:
    try:
        if uri.endswith(".csv"):
            return _read_csv(uri)
        return fs.read_parquet(uri)
    except ArchiveError:
        raise
    except FileNotFoundError:
        raise ArchiveError(f"{uri}: file not found") from None
    except (OSError, ValueError, pa.ArrowException) as e:
        raise ArchiveError(f"{uri}: cannot be read as {uri.rsplit('.', 1)[-1]}: {e}") from None


def check_csv_lines(text: str, where: str) -> None:
    """Every CSV record must be exactly one line with as many fields as the header.

    A quote opened in one row and closed rows later makes the parser merge those rows into one
    record: entities vanish and one takes another's fields. So a record spanning lines (a field
    holding a line break), a field count unlike the header's, or a quote never closed is an
    `ArchiveError` naming the lines (1-based, header = line 1).
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    last = 0
    try:
        for record in reader:
            first, last = last + 1, reader.line_num
            if last > first:
                raise ArchiveError(
                    f"{where}: lines {first}-{last}: one record spans {last - first + 1} lines "
                    f"(a quote opened on line {first} closes on line {last}?); a field may not "
                    "hold a line break, rows are not merged"
                )
            if not record:
                continue  # a blank line
            if header is None:
                header = record
            elif len(record) != len(header):
                raise ArchiveError(f"{where}: line {last}: {len(record)} fields, the header has "
                                   f"{len(header)} ({header})")
    except csv.Error as e:
        raise ArchiveError(f"{where}: line {last + 1}: {e} (a quote never closed?)") from None


def _read_csv(uri: str) -> pa.Table:
    try:
        text = fs.read_bytes(uri).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ArchiveError(f"{uri}: not UTF-8 text: {e}") from None
    check_csv_lines(text, uri)
    text_cols = {c: "string" for c in ("key", *FILE_VIEWS)}
    frame = pd.read_csv(io.StringIO(text), dtype=text_cols, keep_default_na=False,
                        na_values=[""])
    return pa.Table.from_pandas(frame, preserve_index=False)


@dataclass
class Manifest:
    """The entities of an archive, one per unique key, with resolved file locations.

    `views[v][i]` is the absolute location (local path or s3:// URI, see `fs.normalize`) of
    view `v` of entity `keys[i]`, or None when the entity lacks it. `labels` holds the
    evaluation-only `label`, `label_*` columns, row-aligned with `keys`.
    """

    root: str
    path: str
    keys: list[str]
    views: dict[str, list[str | None]]
    labels: pd.DataFrame

    def __len__(self) -> int:
        return len(self.keys)

    def to_table(self) -> pa.Table:
        """key, audio, image (absolute locations or null), then the label columns."""
        columns = {"key": pa.array(self.keys, type=pa.string())}
        for view in FILE_VIEWS:
            columns[view] = pa.array(self.views[view], type=pa.string())
        table = pa.table(columns)
        for name in self.labels.columns:
            table = table.append_column(name, pa.array(self.labels[name].to_numpy()))
        return table


def find_manifest(root: str) -> str:
    for name in MANIFEST_FILES:
        uri = fs.join(root, name)
        if fs.exists(uri):
            return uri
    raise ArchiveError(f"{root}: no {' or '.join(MANIFEST_FILES)} found")


def _check_manifest_columns(table: pa.Table, where: str) -> None:
    _require_text(table, "key", where)
    for column in table.column_names:
        kind = table.schema.field(column).type
        if column in FILE_VIEWS:
            _require_text(table, column, where)
        elif column == "label" or column.startswith("label_"):
            if pat.is_nested(kind):
                raise ArchiveError(f"{where}: column {column!r} must be a scalar, got {kind}")
        elif column != "key":
            raise ArchiveError(
                f"{where}: unknown column {column!r} (allowed: key, audio, image, label, label_*)"
            )


def outside_archive(root: str, location: str) -> str | None:
    """Why the resolved `location` is not inside the archive `root` (symlinks followed for
    local files), or None when it is inside or cannot be judged here (e.g. a NUL byte: the
    read then fails with its own reason)."""
    if fs.is_remote(root):
        inside = location.startswith(root.rstrip("/") + "/")
        return None if inside else f"{location} is not under {root}"
    if fs.is_remote(location):
        return f"{location} is not under {root}"
    try:
        real, real_root = os.path.realpath(location), os.path.realpath(root)
    except (ValueError, OSError):
        return None
    if real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep):
        return None
    via = "" if real == location else f" (resolves to {real})"
    return f"{location}{via} is not under {real_root}"


def _resolve_view(
    root: str, keys: list[str], values: pd.Series, view: str, allow_outside: bool = False
) -> tuple[list[str | None], list[BadRecord]]:
    """Each manifest path resolved against the archive root; unusable paths (bad URI, and
    unless `allow_outside` a location outside the root) become bad records."""
    resolved: list[str | None] = []
    bad: list[BadRecord] = []
    for key, value in zip(keys, values.tolist(), strict=True):
        if value is None or pd.isna(value) or not str(value).strip():
            resolved.append(None)
            continue
        try:
            location = fs.join(root, str(value).strip())
        except ValueError as e:
            resolved.append(None)
            bad.append(BadRecord(key, view, str(value), BAD_PATH, str(e)))
            continue
        outside = None if allow_outside else outside_archive(root, location)
        if outside:
            resolved.append(None)
            bad.append(BadRecord(key, view, str(value), OUTSIDE_ARCHIVE,
                                 f"{outside} (data.allow_outside_paths=true reads it)"))
            continue
        resolved.append(location)
    return resolved, bad


def load_manifest(root: str, allow_outside: bool = False) -> tuple[Manifest, list[BadRecord]]:
    """Read and validate manifest.parquet (or .csv); duplicates after the first are bad records,
    and so are paths leaving the archive root unless `allow_outside`."""
    root = fs.normalize(root)
    where = find_manifest(root)
    table = _read_table(where)
    _check_manifest_columns(table, where)
    frame = table.to_pandas()
    null_row = _first_null_row(frame["key"])
    if null_row is not None:
        raise ArchiveError(f"{where}: row {null_row}: column 'key' is null or empty")
    frame["key"] = frame["key"].astype(str)
    duplicated = frame["key"].duplicated(keep="first").to_numpy()
    bad = [
        BadRecord(key, ENTITY, where, DUPLICATE_KEY, f"row {row + 1}")
        for row, key in zip(np.flatnonzero(duplicated), frame["key"][duplicated], strict=True)
    ]
    frame = frame[~duplicated].reset_index(drop=True)
    keys = frame["key"].tolist()
    views: dict[str, list[str | None]] = {}
    for view in FILE_VIEWS:
        column = frame[view] if view in frame else pd.Series([None] * len(frame))
        views[view], view_bad = _resolve_view(root, keys, column, view, allow_outside)
        bad.extend(view_bad)
    labels = frame[[c for c in frame.columns if c == "label" or c.startswith("label_")]]
    return Manifest(root, where, keys, views, labels), bad


@dataclass
class Logs:
    """The tabular view: rows sorted by key (then `time`), cleaned by `clean_log_rows`.

    Rows of one key are contiguous: `frame.iloc[spans[key][0]:spans[key][1]]`.
    """

    path: str
    frame: pd.DataFrame
    numeric_cols: list[str]
    categorical_cols: list[str]
    time_col: str | None
    problems: list[LogProblem] = field(default_factory=list)  # rows: 1-based in the file
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)


def _numeric_like(values: pd.Series, threshold: float) -> bool:
    """A text column where at least `threshold` of the non-null cells parse as numbers."""
    present = values.dropna()
    if present.empty:
        return False
    parsed = pd.to_numeric(present, errors="coerce")
    return float(parsed.notna().mean()) >= threshold


def classify_log_columns(
    table: pa.Table, frame: pd.DataFrame, where: str, *, numeric_threshold: float = 0.9
) -> tuple[list[str], list[str], str | None]:
    """(numeric, categorical, time) columns by dtype. A text column that is mostly numbers
    (>= numeric_threshold of its cells) is numeric: its stray strings are cell problems."""
    numeric, categorical = [], []
    time_col = "time" if "time" in table.column_names else None
    if time_col:
        kind = table.schema.field("time").type
        if not (_is_number(kind) or pat.is_timestamp(kind) or pat.is_date(kind)):
            raise ArchiveError(f"{where}: column 'time' must be numeric or a timestamp, got {kind}")
    for column in table.column_names:
        if column in ("key", "time"):
            continue
        kind = table.schema.field(column).type
        if _is_number(kind):
            numeric.append(column)
        elif _is_text(kind):
            is_num = _numeric_like(frame[column], numeric_threshold)
            (numeric if is_num else categorical).append(column)
        else:
            raise ArchiveError(f"{where}: column {column!r} has unsupported type {kind}")
    return numeric, categorical, time_col


def _key_spans(keys: np.ndarray) -> dict[str, tuple[int, int]]:
    if len(keys) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    stops = np.r_[starts[1:], len(keys)]
    return {str(keys[a]): (int(a), int(b)) for a, b in zip(starts, stops, strict=True)}


def load_logs(root: str, known_keys: set[str]) -> tuple[Logs | None, list[BadRecord]]:
    """Read logs.parquet if present. Unknown keys and all-unusable keys are bad records."""
    where = fs.join(root, LOGS_FILE)
    if not fs.exists(where):
        return None, []
    table = _read_table(where)
    _require_text(table, "key", where)
    frame = table.to_pandas()
    null_row = _first_null_row(frame["key"])
    if null_row is not None:
        raise ArchiveError(f"{where}: row {null_row}: column 'key' is null or empty")
    numeric, categorical, time_col = classify_log_columns(table, frame, where)
    frame["key"] = frame["key"].astype(str)
    known = frame["key"].isin(known_keys).to_numpy()
    bad = [BadRecord(k, "tabular", where, UNKNOWN_KEY) for k in sorted(set(frame["key"][~known]))]
    order = ["key", time_col] if time_col else ["key"]
    frame = frame[known].sort_values(order, kind="stable", na_position="last")
    file_rows = frame.index.to_numpy()  # 0-based positions in logs.parquet
    frame = frame.reset_index(drop=True)
    frame, problems = clean_log_rows(frame, numeric, categorical)
    problems = [p if p.row is None else replace(p, row=int(file_rows[p.row]) + 1)
                for p in problems]  # rows as in the file: 1-based
    unusable = sorted({p.key for p in problems if p.reason == ALL_ROWS_UNUSABLE})
    rows_of = frame["key"].value_counts()
    bad += [BadRecord(k, "tabular", where, ALL_ROWS_UNUSABLE, f"{int(rows_of[k])} rows")
            for k in unusable]
    # quarantined means absent: those keys keep no rows, so they have no tabular view
    frame = frame[~frame["key"].isin(unusable)].reset_index(drop=True)
    spans = _key_spans(frame["key"].to_numpy())
    return Logs(where, frame, numeric, categorical, time_col, problems, spans), bad


def masked_cells(logs: Logs | None, examples: int = 3) -> dict[str, dict[str, Any]]:
    """Cell problems of numeric log columns (text, +-inf), masked by the pipeline:
    column -> reason -> {"count": cells, "examples": ["key row N: 'value'", ...]}."""
    out: dict[str, dict[str, Any]] = {}
    for p in logs.problems if logs is not None else []:
        if p.column is None:
            continue
        entry = out.setdefault(p.column, {}).setdefault(p.reason, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < examples:
            entry["examples"].append(f"{p.key} row {p.row}: {p.value!r}")
    return out


def masked_cell_records(logs: Logs | None) -> list[BadRecord]:
    """One quarantine row per (key, column, reason) of masked cells: the count and the first
    values. These cells are masked, not records lost: they do not count as bad records."""
    if logs is None:
        return []
    groups: dict[tuple[str, str, str], list[LogProblem]] = {}
    for p in logs.problems:
        if p.column is not None:
            groups.setdefault((p.key, p.column, p.reason), []).append(p)
    return [
        BadRecord(key, "tabular", logs.path, reason,
                  f"column {column!r}: {len(ps)} cells masked, e.g. "
                  + ", ".join(f"row {p.row}: {p.value!r}" for p in ps[:3]))
        for (key, column, reason), ps in sorted(groups.items())
    ]


RELEVANCE_COLUMNS = ("query", "candidate", "relevance")
RELEVANCE_VIEW_COLUMNS = ("query_view", "candidate_view")
RATING_OUT_OF_RANGE = "relevance outside 0-100"
DUPLICATE_PAIR = "duplicate relevance pair"
UNKNOWN_VIEW = "unknown view"


@dataclass
class Relevance:
    """Graded relevance rows that passed validation: query, candidate, relevance (float 0-100),
    query_view, candidate_view (None = any view)."""

    path: str
    frame: pd.DataFrame
    rows: int = 0  # rows in the file, bad ones included (the unit of bad ratings)

    def lists(self, max_candidates: int) -> dict[str, tuple[list[str], list[float]]]:
        """query -> (candidates, ratings), best first, at most `max_candidates` each."""
        ranked = self.frame.sort_values(["query", "relevance"], ascending=[True, False],
                                        kind="stable")
        out: dict[str, tuple[list[str], list[float]]] = {}
        for query, group in ranked.groupby("query", sort=False):
            top = group.head(max_candidates)
            out[str(query)] = (top["candidate"].tolist(), top["relevance"].astype(float).tolist())
        return out


def _relevance_row_reasons(frame: pd.DataFrame, known_keys: set[str]) -> np.ndarray:
    """The first problem of each row ('' = fine), checked in a fixed order."""
    reasons = np.full(len(frame), "", dtype=object)
    rating = frame["relevance"].to_numpy(dtype="float64", na_value=np.nan)
    views_ok = np.ones(len(frame), dtype=bool)
    for column in RELEVANCE_VIEW_COLUMNS:
        views_ok &= (frame[column].isna() | frame[column].isin(VIEWS)).to_numpy()
    checks = [
        (~frame["query"].isin(known_keys).to_numpy(), f"query {UNKNOWN_KEY}"),
        (~frame["candidate"].isin(known_keys).to_numpy(), f"candidate {UNKNOWN_KEY}"),
        (~((rating >= 0) & (rating <= 100)), RATING_OUT_OF_RANGE),
        (~views_ok, UNKNOWN_VIEW),
        (frame.duplicated(["query", "candidate", *RELEVANCE_VIEW_COLUMNS]).to_numpy(),
         DUPLICATE_PAIR),
    ]
    for failed, reason in checks:
        reasons[failed & (reasons == "")] = reason
    return reasons


def load_relevance(root: str, known_keys: set[str]) -> tuple[Relevance | None, list[BadRecord]]:
    """Read relevance.parquet if present; bad rows are reported (view 'relevance'), not fatal."""
    where = fs.join(root, RELEVANCE_FILE)
    if not fs.exists(where):
        return None, []
    table = _read_table(where)
    for column in ("query", "candidate", *RELEVANCE_VIEW_COLUMNS):
        if column in table.column_names or column in RELEVANCE_COLUMNS:
            _require_text(table, column, where)
    if "relevance" not in table.column_names:
        raise ArchiveError(f"{where}: missing column 'relevance' (has {table.column_names})")
    if not _is_number(table.schema.field("relevance").type):
        kind = table.schema.field("relevance").type
        raise ArchiveError(f"{where}: column 'relevance' must be numeric, got {kind}")
    extra = set(table.column_names) - {*RELEVANCE_COLUMNS, *RELEVANCE_VIEW_COLUMNS}
    if extra:
        raise ArchiveError(f"{where}: unknown columns {sorted(extra)}")
    frame = table.to_pandas()
    for column in RELEVANCE_VIEW_COLUMNS:
        if column not in frame:
            frame[column] = None
    for column in ("query", "candidate"):
        null_row = _first_null_row(frame[column])
        if null_row is not None:
            raise ArchiveError(f"{where}: row {null_row}: column {column!r} is null or empty")
    reasons = _relevance_row_reasons(frame, known_keys)
    bad = [
        BadRecord(str(frame["query"].iat[i]), "relevance", where, str(reasons[i]),
                  f"row {i + 1}: candidate {frame['candidate'].iat[i]}, "
                  f"relevance {frame['relevance'].iat[i]}")
        for i in np.flatnonzero(reasons != "")
    ]
    good = frame[reasons == ""].reset_index(drop=True)
    good["relevance"] = good["relevance"].astype("float64")
    return Relevance(where, good, len(frame)), bad


@dataclass
class ArchiveInfo:
    """Everything the pipeline needs to know about an archive before decoding any file."""

    root: str
    manifest: Manifest
    logs: Logs | None
    relevance: Relevance | None
    bad: list[BadRecord]


def load_archive(root: str, *, allow_outside: bool = False) -> ArchiveInfo:
    """Load and validate manifest, logs and relevance of an archive (local folder or s3://).
    `allow_outside` (data.allow_outside_paths): also read media outside the archive root."""
    root = fs.normalize(root)
    manifest, bad = load_manifest(root, allow_outside)
    known = set(manifest.keys)
    logs, logs_bad = load_logs(root, known)
    relevance, relevance_bad = load_relevance(root, known)
    return ArchiveInfo(root, manifest, logs, relevance, bad + logs_bad + relevance_bad)


def check_tables(root: str, *, allow_outside: bool = False) -> ArchiveInfo:
    """`load_archive` + `require_usable_entity`: every table check that needs no decoding.
    Imports no torch, so the CLI runs it before the heavy imports and before Ray starts."""
    info = load_archive(root, allow_outside=allow_outside)
    require_usable_entity(info)
    return info


def require_usable_entity(info: ArchiveInfo) -> None:
    """ArchiveError unless some entity has a file location or usable log rows (the pipeline's
    check: an archive with nothing to read must not pass as a 0-entity success)."""
    manifest = info.manifest
    spans = info.logs.spans if info.logs is not None else {}
    for i, key in enumerate(manifest.keys):
        if key in spans or any(manifest.views[v][i] is not None for v in FILE_VIEWS):
            return
    raise ArchiveError(
        f"{manifest.path}: no usable entity: {len(manifest)} unique keys, none with an audio or "
        f"image location or usable log rows"
    )
