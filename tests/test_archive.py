"""Archive loading and validation, filesystem access (local and a real S3 endpoint)."""

from __future__ import annotations

import os
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3_fixture import make_bucket, s3_endpoint  # noqa: F401  (fixture)

from raysys.data import fs
from raysys.data.archive import (
    ArchiveError,
    bad_records_table,
    load_archive,
    load_manifest,
)
from raysys.data.decode import decode_audio
from raysys.data.demo import make_demo_archive
from raysys.data.zoo import make_corrupt_archive


def write_manifest(root, columns: dict, fmt: str = "parquet") -> str:
    os.makedirs(root, exist_ok=True)
    path = os.path.join(root, f"manifest.{fmt}")
    if fmt == "parquet":
        pq.write_table(pa.table(columns), path)
    else:
        pd.DataFrame(columns).to_csv(path, index=False)
    return str(root)


BASIC = {
    "key": ["a", "b", "c"],
    "audio": ["audio/a.wav", None, "/abs/c.flac"],
    "image": ["file:///img/a.png", "s3://bucket/img/b.png", None],
    "label": [1, 2, 3],
    "label_coarse": ["x", "y", "x"],
}


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_manifest_resolves_relative_and_absolute_locations(tmp_path, fmt):
    root = write_manifest(tmp_path / "arch", BASIC, fmt)
    manifest, bad = load_manifest(root, allow_outside=True)  # data.allow_outside_paths
    assert bad == [] and manifest.keys == ["a", "b", "c"]
    assert manifest.views["audio"] == [f"{root}/audio/a.wav", None, "/abs/c.flac"]
    assert manifest.views["image"] == ["/img/a.png", "s3://bucket/img/b.png", None]
    manifest, bad = load_manifest(root)  # the default: nothing outside the archive root
    assert manifest.views["audio"] == [f"{root}/audio/a.wav", None, None]
    assert manifest.views["image"] == [None, None, None]
    assert {(r.key, r.view, r.reason) for r in bad} == {
        ("c", "audio", "outside the archive"), ("a", "image", "outside the archive"),
        ("b", "image", "outside the archive")}
    assert manifest.labels["label"].tolist() == [1, 2, 3]
    assert manifest.labels["label_coarse"].tolist() == ["x", "y", "x"]
    table = manifest.to_table()
    assert table.column_names == ["key", "audio", "image", "label", "label_coarse"]


def test_csv_and_parquet_manifests_agree(tmp_path):
    a, _ = load_manifest(write_manifest(tmp_path / "p", BASIC, "parquet"))
    b, _ = load_manifest(write_manifest(tmp_path / "c", BASIC, "csv"))
    strip = lambda m: [None if v is None else v.replace(m.root, "") for v in m.views["audio"]]
    assert strip(a) == strip(b) and a.keys == b.keys
    assert a.labels.astype(str).equals(b.labels.astype(str))


@pytest.mark.parametrize(
    "columns,message",
    [
        ({"id": ["a"], "audio": ["x.wav"]}, "missing column 'key'"),
        ({"key": [1, 2], "audio": ["x.wav", "y.wav"]}, "column 'key' must be string, got int64"),
        ({"key": ["a"], "Audio": ["x.wav"]}, "unknown column 'Audio'"),
        ({"key": ["a"], "image": [3]}, "column 'image' must be string"),
        ({"key": ["a", None], "audio": ["x.wav", "y.wav"]}, "row 2: column 'key' is null"),
        ({"key": ["a"], "label_x": [[1, 2]]}, "column 'label_x' must be a scalar"),
    ],
)
def test_malformed_manifest_names_column_and_row(tmp_path, columns, message):
    root = write_manifest(tmp_path, columns)
    with pytest.raises(ArchiveError, match=message) as e:
        load_manifest(root)
    assert "manifest.parquet" in str(e.value)


def test_missing_or_unreadable_manifest(tmp_path):
    with pytest.raises(ArchiveError, match="no manifest.parquet or manifest.csv"):
        load_manifest(str(tmp_path))
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")
    with pytest.raises(ArchiveError, match="manifest.parquet: cannot be read as parquet"):
        load_manifest(str(tmp_path))


def test_duplicate_keys_keep_the_first_row(tmp_path):
    root = write_manifest(tmp_path, {"key": ["a", "b", "a", "a"],
                                     "audio": ["1.wav", "2.wav", "3.wav", "4.wav"]})
    manifest, bad = load_manifest(root)
    assert manifest.keys == ["a", "b"]
    assert manifest.views["audio"][0].endswith("/1.wav")
    assert [(b.key, b.view, b.reason, b.detail) for b in bad] == [
        ("a", "entity", "duplicate key", "row 3"), ("a", "entity", "duplicate key", "row 4")]
    table = bad_records_table(bad)
    assert table.column_names == ["key", "view", "path", "reason", "detail"]
    assert table.num_rows == 2


def test_logs_sorted_by_time_classified_and_spanned(tmp_path):
    write_manifest(tmp_path, {"key": ["a", "b", "c"], "audio": [None, None, None]})
    rng = np.random.default_rng(0)
    keys = rng.choice(["a", "b", "ghost"], 30)
    logs = pa.table({
        "key": keys, "time": rng.permutation(30).astype(float),
        "speed": rng.normal(size=30), "count": rng.integers(0, 5, 30),
        "mostly_num": [str(v) if i != 3 else "oops" for i, v in enumerate(range(30))],
        "state": rng.choice(["on", "off"], 30),
    })
    pq.write_table(logs, tmp_path / "logs.parquet")
    info = load_archive(str(tmp_path))
    lg = info.logs
    assert lg.numeric_cols == ["speed", "count", "mostly_num"] and lg.categorical_cols == ["state"]
    assert lg.time_col == "time"
    reference = logs.to_pandas()
    reference = reference[reference["key"] != "ghost"].sort_values(["key", "time"])
    np.testing.assert_array_equal(lg.frame["time"].to_numpy(), reference["time"].to_numpy())
    np.testing.assert_array_equal(lg.frame["speed"].to_numpy(), reference["speed"].to_numpy())
    for key, (start, stop) in lg.spans.items():
        assert set(lg.frame["key"].iloc[start:stop]) == {key}
        assert stop - start == int((reference["key"] == key).sum())
    assert set(lg.spans) == {"a", "b"}
    assert [(p.column, p.value, p.reason) for p in lg.problems] == [
        ("mostly_num", "oops", "non-numeric value")]
    assert [(b.key, b.view, b.reason) for b in info.bad] == [
        ("ghost", "tabular", "key not in manifest")]


@pytest.mark.parametrize(
    "logs,message",
    [
        ({"id": ["a"], "x": [1.0]}, "logs.parquet: missing column 'key'"),
        ({"key": ["a"], "time": ["noon"]}, "column 'time' must be numeric or a timestamp"),
        ({"key": ["a"], "vec": [[1.0, 2.0]]}, "column 'vec' has unsupported type"),
    ],
)
def test_malformed_logs_name_the_column(tmp_path, logs, message):
    write_manifest(tmp_path, {"key": ["a"]})
    pq.write_table(pa.table(logs), tmp_path / "logs.parquet")
    with pytest.raises(ArchiveError, match=message):
        load_archive(str(tmp_path))


def test_relevance_bad_rows_are_reported_and_lists_ranked(tmp_path):
    write_manifest(tmp_path, {"key": ["a", "b", "c", "d"]})
    rows = pa.table({
        "query": ["a", "a", "a", "b", "b", "b", "c"],
        "candidate": ["b", "c", "d", "a", "z", "a", "a"],
        "relevance": [10.0, 90.0, 50.0, 101.0, 20.0, 30.0, float("nan")],
        "candidate_view": ["audio", None, None, None, None, "smell", None],
    })
    pq.write_table(rows, tmp_path / "relevance.parquet")
    info = load_archive(str(tmp_path))
    assert sorted((b.key, b.reason) for b in info.bad) == [
        ("b", "candidate key not in manifest"), ("b", "relevance outside 0-100"),
        ("b", "unknown view"), ("c", "relevance outside 0-100")]
    assert info.relevance.lists(2) == {"a": (["c", "d"], [90.0, 50.0])}


def test_malformed_relevance_names_the_column(tmp_path):
    write_manifest(tmp_path, {"key": ["a"]})
    pq.write_table(pa.table({"query": ["a"], "candidate": ["a"], "relevance": ["high"]}),
                   tmp_path / "relevance.parquet")
    with pytest.raises(ArchiveError, match="column 'relevance' must be numeric"):
        load_archive(str(tmp_path))


def test_zoo_archive_reports_exactly_the_expected_bad_records(tmp_path):
    expected = make_corrupt_archive(str(tmp_path), seed=1)
    info = load_archive(str(tmp_path))
    assert {(b.key, b.view, b.reason) for b in info.bad} == expected.archive_bad
    assert len(info.bad) == len(expected.archive_bad)
    assert info.manifest.keys == expected.keys


def test_fs_normalize_and_join():
    assert fs.join("s3://bkt/arch/", "audio/../x.wav") == "s3://bkt/arch/x.wav"
    assert fs.join("/data/arch", "a/b.wav") == "/data/arch/a/b.wav"
    assert fs.join("/data/arch", "file:///x/y.png") == "/x/y.png"
    assert fs.join("s3://bkt/arch", "s3://other/k") == "s3://other/k"
    with pytest.raises(ValueError, match="unsupported URI scheme 'http'"):
        fs.join("/data", "http://host/a.wav")
    with pytest.raises(ValueError, match="points above its bucket"):
        fs.normalize("s3://bkt/../x")


def test_fs_local_roundtrip_and_errors(tmp_path):
    target = str(tmp_path / "deep" / "dir" / "f.bin")
    fs.write_bytes(target, b"\x00\x01payload")
    assert fs.exists(target) and fs.read_bytes(target) == b"\x00\x01payload"
    assert fs.read_bytes("file://" + target) == b"\x00\x01payload"
    with pytest.raises(FileNotFoundError, match="no such file"):
        fs.read_bytes(str(tmp_path / "nope"))
    with pytest.raises(IsADirectoryError):
        fs.read_bytes(str(tmp_path))


def test_retry_io_retries_transient_errors_with_backoff_only():
    calls = []

    def flaky() -> str:
        calls.append(time.perf_counter())
        if len(calls) < 3:
            raise ConnectionResetError("peer reset")
        return "ok"

    assert fs.retry_io(flaky, retries=3, backoff_s=0.01) == "ok"
    gaps = np.diff(calls)
    assert len(calls) == 3 and gaps[0] >= 0.01 and gaps[1] >= 0.02  # 0.01 * 2**k
    calls.clear()

    def missing() -> None:
        calls.append(0)
        raise FileNotFoundError("gone")

    with pytest.raises(FileNotFoundError):
        fs.retry_io(missing, retries=5, backoff_s=0.01)
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(ConnectionResetError):
        fs.retry_io(flaky, retries=1, backoff_s=0.0)
    assert len(calls) == 2


@pytest.mark.s3
def test_archive_on_s3_loads_and_decodes(s3_endpoint, tmp_path):  # noqa: F811
    make_bucket(s3_endpoint, "raysys-test")
    make_demo_archive("s3://raysys-test/demo", entities=6, seed=5, missing_fraction=0.0)
    make_demo_archive(str(tmp_path), entities=6, seed=5, missing_fraction=0.0)
    remote, local = load_archive("s3://raysys-test/demo"), load_archive(str(tmp_path))
    assert remote.manifest.keys == local.manifest.keys and remote.bad == []
    uri = remote.manifest.views["audio"][0]
    assert uri.startswith("s3://raysys-test/demo/audio/")
    remote_wave, _ = decode_audio(fs.read_bytes(uri), sample_rate=16000)
    local_wave, _ = decode_audio(fs.read_bytes(local.manifest.views["audio"][0]),
                                 sample_rate=16000)
    np.testing.assert_array_equal(remote_wave, local_wave)
    assert remote.logs.frame.equals(local.logs.frame)
    assert remote.relevance.frame.equals(local.relevance.frame)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError):
        fs.read_bytes("s3://raysys-test/demo/audio/none.wav", retries=3, backoff_s=1.0)
    assert time.perf_counter() - start < 1.0  # not-found is not retried
