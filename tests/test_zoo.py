"""The bad-input zoo as a test (issue 16): every kind of bad input, made from a small demo
archive by `raysys.data.zoo`, and the exact outcome raysys gives it.

Record-level kinds are planted together in one archive (decoded once below Ray, and streamed
once through `inspect_archive` on Ray); fatal kinds each break a copy of the tables and fail
in `open_archive` before any file is read. docs/archive-format.md has the same table.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysys.data import decode as d
from raysys.data import zoo
from raysys.data.archive import (
    ALL_ROWS_UNUSABLE,
    BAD_PATH,
    DUPLICATE_KEY,
    DUPLICATE_PAIR,
    ENTITY,
    OUTSIDE_ARCHIVE,
    RATING_OUT_OF_RANGE,
    UNKNOWN_KEY,
    UNKNOWN_VIEW,
    ArchiveError,
    masked_cell_records,
)
from raysys.data.config import DataConfig
from raysys.data.pipeline import open_archive
from raysys.data.views import NON_FINITE_FEATURES

CFG = DataConfig(clip_seconds=0.5, image_size=32, max_bad_fraction=1.0, read_timeout_s=10.0)
VIEWS = ("audio", "image", "tabular")
DECODE_TIMEOUT_S = 90.0

OK, MISSING, BAD, MASKED = "kept", "missing", "quarantined", "masked"


@dataclass(frozen=True)
class Outcome:
    """What raysys does with one kind: the view it concerns, `kind` (OK: decoded and kept;
    MISSING: not given, not bad; BAD: quarantined with `reason`, the view absent; MASKED: cells
    reported with `reason`, the view kept)."""

    view: str
    kind: str
    reason: str = ""


def bad(view: str, reason: str) -> Outcome:
    return Outcome(view, BAD, reason)


def ok(view: str) -> Outcome:
    return Outcome(view, OK)


A, IM, T, R = "audio", "image", "tabular", "relevance"
RECORD_OUTCOMES: dict[str, Outcome] = {
    # audio files: corrupt, truncated, mislabelled, exotic
    "audio-corrupt-header": bad(A, d.CORRUPT_AUDIO_HEADER),
    "audio-corrupt-data": bad(A, d.CORRUPT_AUDIO_DATA),
    "audio-empty": bad(A, d.EMPTY_FILE),
    "audio-truncated-wav": bad(A, d.TRUNCATED_AUDIO),
    "audio-truncated-flac": bad(A, d.CORRUPT_AUDIO_DATA),  # libsndfile: "lost sync"
    "audio-text-as-wav": bad(A, d.NOT_AUDIO),
    "audio-mp3-as-wav": bad(A, d.UNSUPPORTED_AUDIO),
    "audio-aiff": bad(A, d.UNSUPPORTED_AUDIO),
    "audio-header-only": bad(A, d.NO_SAMPLES),
    "audio-nan-samples": bad(A, d.NON_FINITE_AUDIO),
    "audio-huge-float": bad(A, NON_FINITE_FEATURES),
    "audio-rate-zero": bad(A, d.CORRUPT_AUDIO_HEADER),
    "audio-zero-channels": bad(A, d.CORRUPT_AUDIO_HEADER),
    "audio-flac-named-wav": ok(A),  # the container is sniffed, the name is not trusted
    "audio-ogg-vorbis": ok(A),
    # odd sample rates and channel counts, exotic sample formats
    "audio-rate-8001": ok(A),
    "audio-rate-22051": ok(A),
    "audio-rate-1hz": ok(A),
    "audio-rate-192k": ok(A),
    "audio-6-channels": ok(A),
    "audio-64-channels": ok(A),
    "audio-pcm-u8": ok(A),
    "audio-pcm-24": ok(A),
    "audio-float64": ok(A),
    "audio-ulaw": ok(A),
    "audio-silence": ok(A),
    "audio-ten-samples": ok(A),  # padded to the clip
    # image files: corrupt, truncated, mislabelled, exotic, a decompression bomb
    "image-corrupt-header": bad(IM, d.CORRUPT_IMAGE_HEADER),
    "image-corrupt-data": bad(IM, d.CORRUPT_IMAGE_DATA),
    "image-truncated-png": bad(IM, d.TRUNCATED_IMAGE),
    "image-truncated-jpeg": bad(IM, d.TRUNCATED_IMAGE),
    "image-text-as-png": bad(IM, d.NOT_IMAGE),
    "image-empty": bad(IM, d.EMPTY_FILE),
    "image-bomb": bad(IM, d.IMAGE_TOO_LARGE),
    "image-jpeg-named-png": ok(IM),
    "image-rgba": ok(IM),
    "image-grey-16bit": ok(IM),
    "image-palette": ok(IM),
    "image-cmyk-jpeg": ok(IM),
    "image-1x1": ok(IM),
    "image-1x4000": ok(IM),
    "image-gif": ok(IM),
    "image-tiff": ok(IM),
    "image-bmp": ok(IM),
    "image-webp": ok(IM),
    # paths: missing, FIFOs, directories, devices, symlinks, URIs, outside the archive
    "path-missing-file": bad(A, d.FILE_NOT_FOUND),
    "path-fifo": bad(A, d.NOT_REGULAR_FILE),
    "path-directory": bad(IM, d.NOT_REGULAR_FILE),
    "path-device": bad(IM, OUTSIDE_ARCHIVE),  # /dev/zero: refused before any read
    "path-symlink-inside": ok(A),
    "path-symlink-dangling": bad(IM, d.FILE_NOT_FOUND),
    "path-symlink-loop": bad(A, d.READ_ERROR),
    "path-symlink-to-fifo": bad(IM, d.NOT_REGULAR_FILE),
    # Leaving the archive root is refused by default (data.allow_outside_paths=false), symlinks
    # followed; a file:// URI into the archive is inside.
    "path-symlink-outside": bad(A, OUTSIDE_ARCHIVE),
    "path-dotdot-outside": bad(IM, OUTSIDE_ARCHIVE),
    "path-absolute-outside": bad(A, OUTSIDE_ARCHIVE),
    "path-file-uri": ok(IM),
    "path-file-uri-relative": bad(A, BAD_PATH),
    "path-http-uri": bad(IM, BAD_PATH),
    "path-nul-byte": bad(A, d.READ_ERROR),
    "path-padded": ok(IM),  # surrounding spaces are stripped
    "path-empty": Outcome(A, MISSING),
    "path-blank": Outcome(IM, MISSING),
    # log rows
    "logs-inf-cells": Outcome(T, MASKED, d.INFINITE_VALUE),
    "logs-text-cells": Outcome(T, MASKED, d.NON_NUMERIC),
    "logs-nan-cells": ok(T),  # NaN is a missing value: masked, not reported
    "logs-null-time": ok(T),  # the row goes last
    "logs-all-unusable": bad(T, ALL_ROWS_UNUSABLE),
    "logs-unknown-key": bad(T, UNKNOWN_KEY),
    # relevance rows: counted in ratings, not against views
    "rating-above-100": bad(R, RATING_OUT_OF_RANGE),
    "rating-negative": bad(R, RATING_OUT_OF_RANGE),
    "rating-nan": bad(R, RATING_OUT_OF_RANGE),
    "rating-unknown-query": bad(R, f"query {UNKNOWN_KEY}"),
    "rating-unknown-candidate": bad(R, f"candidate {UNKNOWN_KEY}"),
    "rating-unknown-view": bad(R, UNKNOWN_VIEW),
    "rating-duplicate-pair": bad(R, DUPLICATE_PAIR),
    # manifest rows
    "manifest-duplicate-key": bad(ENTITY, DUPLICATE_KEY),  # the first row is kept
}

# Fatal kinds: ArchiveError from open_archive (inspect, pretraining and evaluation all open the
# archive this way before any worker starts); the message names the file and the row or column.
FATAL_OUTCOMES: dict[str, str] = {
    "manifest-absent": r"manifest-absent: no manifest\.parquet or manifest\.csv found",
    "manifest-not-parquet": r"manifest\.parquet: cannot be read as parquet: ",
    "manifest-truncated-parquet": r"manifest\.parquet: cannot be read as parquet: ",
    "manifest-empty-file": r"manifest\.parquet: cannot be read as parquet: .*0 bytes",
    "manifest-no-key-column": r"manifest\.parquet: missing column 'key'",
    "manifest-key-not-text": r"manifest\.parquet: column 'key' must be string, got int64",
    "manifest-unknown-column": r"manifest\.parquet: unknown column 'Audio'",
    "manifest-null-key": r"manifest\.parquet: row 3: column 'key' is null or empty",
    "manifest-empty-key": r"manifest\.parquet: row 5: column 'key' is null or empty",
    "manifest-nested-label": r"manifest\.parquet: column 'label' must be a scalar",
    "manifest-path-not-text": r"manifest\.parquet: column 'audio' must be string, got int64",
    "manifest-no-rows": r"manifest\.parquet: no usable entity: 0 unique keys",
    "manifest-no-locations": r"manifest\.parquet: no usable entity: 16 unique keys",
    "csv-merged-rows": r"manifest\.csv: lines 2-4: one record spans 3 lines",
    "csv-missing-field": r"manifest\.csv: line 3: 2 fields, the header has 3",
    "csv-quote-never-closed": r"manifest\.csv: line 3: .*a quote never closed",
    "csv-not-utf8": r"manifest\.csv: not UTF-8 text",
    "csv-empty-file": r"manifest\.csv: cannot be read as csv: No columns to parse",
    "csv-header-only": r"manifest\.csv: no usable entity: 0 unique keys",
    "logs-not-parquet": r"logs\.parquet: cannot be read as parquet: ",
    "logs-no-key-column": r"logs\.parquet: missing column 'key'",
    "logs-null-key": r"logs\.parquet: row 7: column 'key' is null or empty",
    "logs-time-text": r"logs\.parquet: column 'time' must be numeric or a timestamp",
    "logs-list-column": r"logs\.parquet: column 'extra' has unsupported type list",
    "relevance-not-parquet": r"relevance\.parquet: cannot be read as parquet: ",
    "relevance-no-rating-column": r"relevance\.parquet: missing column 'relevance'",
    "relevance-rating-text": r"relevance\.parquet: column 'relevance' must be numeric",
    "relevance-null-query": r"relevance\.parquet: row 4: column 'query' is null or empty",
    "relevance-unknown-column": r"relevance\.parquet: unknown columns \['note'\]",
}

# Bad data.* settings: the CLI refuses them before Ray starts, exit 2, naming the key.
CONFIG_OUTCOMES: dict[str, str] = {
    "data.sample_rate=0": "data.sample_rate: Input should be greater than 0",
    "data.modalities=[video]": "data.modalities.0: Input should be 'audio', 'image' or",
    "data.read_timeout_s=0": "data.read_timeout_s: Input should be greater than 0",
    "data.clip_seconds=0.01": "clip_seconds=0.01 gives fewer than n_fft/2",
    "data.max_bad_fraction=1.5": "data.max_bad_fraction: Input should be less than or equal",
    "data.audio.f_max=99999": "need f_min < f_max <= sample_rate/2",
    "data.modalities=[audio,audio]": "modalities has duplicates",
    "data.batch_size=abc": "data.batch_size: Input should be a valid integer",
    "data.no_such_key=1": "data.no_such_key: unknown key",
}


def in_thread(fn: Callable[[], Any], timeout_s: float) -> Any:
    """fn() in a daemon thread; a hang fails the test instead of hanging the session."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised below
            box["error"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    assert not thread.is_alive(), f"no result within {timeout_s} s (a hang)"
    if "error" in box:
        raise box["error"]
    return box["value"]


# -- the grouped archive of record-level kinds ----------------------------------------------------


@dataclass
class Decoded:
    zoo: zoo.ZooArchive
    pipe: Any
    rows: dict[str, np.ndarray]

    def row(self, key: str) -> int:
        return int(np.flatnonzero(self.rows["key"] == key)[0])

    def quarantined(self) -> set[tuple[str, str, str]]:
        """(key, view, reason) of every bad record: archive-level ones and decode failures."""
        out = {(r.key, r.view, r.reason) for r in self.pipe.info.bad}
        for view in VIEWS:
            for key, error in zip(self.rows["key"], self.rows[f"error.{view}"], strict=True):
                if error:
                    out.add((str(key), view, str(error).partition(": ")[0]))
        return out


@pytest.fixture(scope="module")
def decoded(tmp_path_factory) -> Decoded:
    """The zoo archive decoded once, below Ray (the decode tasks' RowBuilder, in-process)."""
    from raysys.data.rows import RowBuilder

    made = zoo.make_zoo_archive(tmp_path_factory.mktemp("zoo") / "archive", seed=0)
    pipe = open_archive(made.root, CFG)
    plan = pipe.plan("all", shuffle=False).rows()
    rows = in_thread(lambda: RowBuilder(pipe.cfg, pipe.stats, pipe.info.logs)(plan),
                     DECODE_TIMEOUT_S)
    return Decoded(made, pipe, rows)


def expected_quarantine(made: zoo.ZooArchive) -> set[tuple[str, str, str]]:
    return {(made.victims[k], o.view, o.reason) for k, o in RECORD_OUTCOMES.items()
            if o.kind == BAD}


def expected_counts(made: zoo.ZooArchive) -> dict[str, tuple[int, int]]:
    """view -> (present, bad) over the whole zoo archive."""
    counts = {}
    for view in VIEWS:
        outcomes = [o for o in RECORD_OUTCOMES.values() if o.view == view]
        bad_n = sum(o.kind == BAD for o in outcomes)
        absent = sum(o.kind in (BAD, MISSING) for o in outcomes)
        absent -= view == T  # the unknown log key is no manifest entity
        counts[view] = (made.entities - absent, bad_n)
    return counts


def test_the_table_covers_every_kind_the_zoo_makes():
    assert set(RECORD_OUTCOMES) == set(zoo.record_kinds())
    assert set(FATAL_OUTCOMES) == set(zoo.FATAL_KINDS)
    assert len(RECORD_OUTCOMES) + len(FATAL_OUTCOMES) + len(zoo.TABLE_KINDS) + len(
        CONFIG_OUTCOMES) >= 79  # the zoo had 79 kinds


@pytest.mark.parametrize("kind", list(RECORD_OUTCOMES))
def test_record_kind(decoded: Decoded, kind: str):
    outcome, key = RECORD_OUTCOMES[kind], decoded.zoo.victims[kind]
    mine = {(v, r) for k, v, r in decoded.quarantined() if k == key and v == outcome.view}
    if outcome.kind == BAD:
        assert mine == {(outcome.view, outcome.reason)}, kind
    else:
        assert mine == set(), kind
    if outcome.view not in VIEWS or key not in set(decoded.rows["key"]):
        return
    present = bool(decoded.rows[f"{outcome.view}_present"][decoded.row(key)])
    assert present == (outcome.kind in (OK, MASKED)), kind
    if outcome.kind == MASKED:
        masked = masked_cell_records(decoded.pipe.info.logs)
        assert {r.reason for r in masked if r.key == key} == {outcome.reason}


def test_exact_counts_and_every_bad_record_once(decoded: Decoded):
    rows, made = decoded.rows, decoded.zoo
    assert len(rows["key"]) == made.entities  # the duplicate row is not an entity
    assert decoded.quarantined() == expected_quarantine(made)
    for view, (present, bad_n) in expected_counts(made).items():
        assert int(rows[f"{view}_present"].sum()) == present, view
        got_bad = sum(v == view for _, v, _ in decoded.quarantined())
        assert got_bad == bad_n, view
    assert np.isfinite(rows["audio"]).all() and np.isfinite(rows["tabular_num"]).all()
    assert not any(rows["error.build"])


def test_inspect_streams_the_zoo_on_ray_with_the_same_outcome(ray_session, decoded, tmp_path):
    """The one Ray pass: `data inspect` over the zoo archive; counts, reasons and units."""
    from raysys.data.inspect import inspect_archive

    made, out = decoded.zoo, tmp_path / "inspect"
    summary = in_thread(lambda: inspect_archive(made.root, CFG, out_dir=str(out), progress=False),
                        DECODE_TIMEOUT_S)
    for view, (present, bad_n) in expected_counts(made).items():
        assert (summary["views"][view]["present"], summary["views"][view]["bad"]) == (
            present, bad_n), view
    table = pq.read_table(out / "quarantine.parquet").to_pandas()
    is_masked = table["reason"].isin([d.INFINITE_VALUE, d.NON_NUMERIC]).to_numpy()
    records = list(zip(table["key"][~is_masked], table["view"][~is_masked],
                       table["reason"][~is_masked], strict=True))
    assert len(records) == len(set(records)) and set(records) == expected_quarantine(made)
    ratings = sum(o.view == R and o.kind == BAD for o in RECORD_OUTCOMES.values())
    assert summary["bad_ratings"] == {"bad": ratings, "of": made.ratings}
    assert summary["bad_records"] == len(records) - ratings  # ratings are not views
    cells = Counter({reason: entry["count"] for reasons in summary["masked_log_cells"].values()
                     for reason, entry in reasons.items()})
    assert cells == {d.INFINITE_VALUE: 2, d.NON_NUMERIC: 1}
    assert summary["ok"]  # max_bad_fraction=1.0 here


# -- fatal kinds and table kinds: one copy of the tables each -----------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    from raysys.data.demo import make_demo_archive

    root = tmp_path_factory.mktemp("zoo-demo") / "demo"
    make_demo_archive(str(root), entities=16, seed=2, missing_fraction=0.0)
    return str(root)


def broken(demo: str, tmp_path, kind: str) -> str:
    root = zoo.copy_tables(demo, tmp_path / kind)
    zoo.break_archive(root, kind)
    return root


@pytest.mark.parametrize("kind", list(FATAL_OUTCOMES))
def test_fatal_kind(demo, tmp_path, kind: str):
    root = broken(demo, tmp_path, kind)
    with pytest.raises(ArchiveError) as caught:
        in_thread(lambda: open_archive(root, CFG), 30.0)
    message = str(caught.value)
    assert re.search(FATAL_OUTCOMES[kind], message), message
    assert message.startswith(root) and "Traceback" not in message


def test_no_logs_table_makes_tabular_absent(demo, tmp_path):
    root = broken(demo, tmp_path, "logs-absent")
    pipe = open_archive(root, CFG)
    assert pipe.cfg.modalities == ["audio", "image"] and len(pipe.notes) == 1
    with pytest.raises(ArchiveError, match=r"no logs\.parquet, and data\.modalities is"):
        open_archive(root, CFG.model_copy(update={"modalities": ["tabular"]}))


def test_too_many_bad_ratings_fail_inspect_and_pretraining_alike(demo, tmp_path):
    from raysys.data.archive import load_archive
    from raysys.data.quarantine import ratings_problem

    root = broken(demo, tmp_path, "ratings-too-many-bad")
    message = ratings_problem(load_archive(root), 0.05)
    assert message and re.search(r"relevance\.parquet: \d+ of \d+ relevance ratings are bad",
                                 message)


@pytest.mark.xfail(strict=True, reason="defect: a finite but huge log value (1e200) overflows "
                   "the column's variance; the column then standardises to 0 for every entity, "
                   "silently (reported with issue 16's zoo)")
def test_huge_log_values_do_not_wipe_the_column(demo, tmp_path):
    root = broken(demo, tmp_path, "logs-huge-values")
    pipe = open_archive(root, CFG)
    count, mean, m2 = pipe.stats.to_dict()["numeric"]["level"]
    assert np.isfinite(mean) and np.isfinite(m2)


# -- configs: refused before any work, exit 2, no traceback ------------------------------------


def no_ray(monkeypatch) -> None:
    import raysys.runtime

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(raysys.runtime, "init_ray", refuse)


@pytest.mark.parametrize("override", list(CONFIG_OUTCOMES))
def test_bad_data_config(demo, monkeypatch, capsys, override: str):
    from raysys.cli import main

    no_ray(monkeypatch)
    assert main(["data", "inspect", demo, override]) == 2
    err = capsys.readouterr().err
    assert CONFIG_OUTCOMES[override] in err and "Traceback" not in err, err


def test_fatal_kind_through_the_cli_exits_2_before_ray(demo, tmp_path, monkeypatch, capsys):
    """`data inspect` checks the tables before Ray starts: one message, exit 2 (issue 17)."""
    from raysys.cli import main

    no_ray(monkeypatch)
    root = broken(demo, tmp_path, "manifest-null-key")
    assert main(["data", "inspect", root]) == 2
    err = capsys.readouterr().err
    assert "row 3: column 'key'" in err and "Traceback" not in err, err


def test_paths_outside_the_archive_are_read_when_allowed(decoded: Decoded):
    """data.allow_outside_paths=true: absolute paths, ../ and symlinks leaving the root are
    read like any file (the device is then refused as not a regular file)."""
    from raysys.data.rows import RowBuilder

    cfg = CFG.model_copy(update={"allow_outside_paths": True})
    pipe = open_archive(decoded.zoo.root, cfg)
    reasons = {(r.key, r.reason) for r in pipe.info.bad}
    victims = [decoded.zoo.victims[k] for k in ("path-symlink-outside", "path-dotdot-outside",
                                                "path-absolute-outside", "path-device")]
    assert not any(reason == OUTSIDE_ARCHIVE for _, reason in reasons)
    plan = pipe.plan("all", shuffle=False).rows()
    plan = plan[plan["key"].isin(victims)]
    rows = in_thread(lambda: RowBuilder(pipe.cfg, pipe.stats, pipe.info.logs)(plan),
                     DECODE_TIMEOUT_S)
    got = dict(zip(rows["key"], zip(rows["audio_present"], rows["image_present"],
                                    rows["error.image"], strict=True), strict=True))
    assert got[victims[0]][0] and got[victims[1]][1] and got[victims[2]][0]
    assert not got[victims[3]][1] and str(got[victims[3]][2]).startswith(d.NOT_REGULAR_FILE)
