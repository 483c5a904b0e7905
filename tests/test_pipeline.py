"""The Ray Data pipeline end to end on a local Ray instance: shapes, determinism, resume,
sharding, quarantine of a corrupt-file zoo with exact counts, the bad-share guard, and S3."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow.parquet as pq
import pytest

from raysys.data.batch import HeteroBatch
from raysys.data.config import DataConfig
from raysys.data.decode import ALL_ROWS_UNUSABLE, INFINITE_VALUE, NON_NUMERIC
from raysys.data.inspect import inspect_archive
from raysys.data.pipeline import iter_hetero_batches, open_archive
from raysys.data.quarantine import QuarantineLog, TooManyBadRecords
from raysys.data.zoo import make_corrupt_archive

CFG = DataConfig(batch_size=8, clip_seconds=0.5, image_size=32, tabular_window=6, max_candidates=8,
                 audio={"n_bins": 32})


def _collect(ds, batch_size=8) -> dict[str, np.ndarray]:
    parts = list(ds.iter_batches(batch_size=batch_size, batch_format="numpy"))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


@pytest.fixture(scope="module")
def pipe(ray_session, demo_archive):
    return open_archive(demo_archive, CFG)


def test_batches_follow_the_contract(pipe) -> None:
    ds = pipe.dataset("train", epochs=1, diagnostics=False)
    batch = next(iter_hetero_batches(ds, 8))
    assert isinstance(batch, HeteroBatch) and batch.size == 8
    v = CFG.views_per_modality
    audio = batch.views["audio"]
    t = 1 + int(CFG.clip_seconds * CFG.sample_rate) // CFG.audio.hop_length
    assert audio.x.shape == (8, v, 3, 32, t)
    assert batch.views["image"].x.shape == (8, v, 3, 32, 32)
    tab = batch.views["tabular"].x
    assert tab["tabular_row_mask"].shape[:3] == (8, v, 6)
    assert batch.relevance.shape == (8, CFG.max_candidates)
    # missing views are zero tensors, present ones carry data; nothing non-finite
    for name, mv in batch.views.items():
        if name != "tabular":
            assert not mv.x[~mv.present].any()
            assert mv.x[mv.present].abs().sum() > 0
            assert torch_finite(mv.x)
    applied = audio.applied()
    assert {"pitch_shift", "time_stretch", "gain"} <= set(applied)
    assert applied["pitch_shift"].shape == (8, v)
    # a recorded pitch shift has a parameter, an unapplied one is 0
    semis = audio.aug["pitch_shift"]
    param = next(p for p in semis if p != "applied")
    assert (semis[param][~semis["applied"]] == 0).all()


def torch_finite(x) -> bool:
    import torch

    return bool(torch.isfinite(x).all())


def test_deterministic_for_a_seed_and_resumable(pipe) -> None:
    a = _collect(pipe.dataset("train", epochs=2))
    b = _collect(pipe.dataset("train", epochs=2))
    assert list(a["key"]) == list(b["key"])
    for col in ("audio", "image", "tabular_num", "aug.audio.pitch_shift.applied"):
        np.testing.assert_array_equal(a[col], b[col])
    n = len(pipe.entities.select("train"))
    assert len(a["key"]) == 2 * n
    assert set(a["key"][:n]) == set(a["key"][n:])  # both epochs see every entity once
    assert not np.array_equal(a["audio"][:n], a["audio"][n:])  # epochs differ in augmentation
    # resume mid-stream gives exactly the tail of the uninterrupted stream
    tail = _collect(pipe.dataset("train", epochs=2, start=n + 3))
    np.testing.assert_array_equal(tail["position"], a["position"][n + 3 :])
    np.testing.assert_array_equal(tail["audio"], a["audio"][n + 3 :])


def test_eval_preprocessing_is_deterministic_and_unaugmented(pipe) -> None:
    out = _collect(pipe.dataset("eval", augment=False, shuffle=False))
    applied = [c for c in out if c.startswith("aug.") and c.endswith(".applied")]
    assert applied and not any(out[c].any() for c in applied)
    present = out["audio_present"]
    np.testing.assert_array_equal(out["audio"][present, 0], out["audio"][present, 1])


def test_streaming_split_covers_every_row_once(pipe) -> None:
    ds = pipe.dataset("train", epochs=1, diagnostics=False)
    shards = ds.streaming_split(2, equal=False)
    import threading

    seen: list[list[str]] = [[], []]

    def consume(i: int) -> None:
        for batch in shards[i].iter_batches(batch_size=4, batch_format="numpy"):
            seen[i].extend(batch["key"].tolist())

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    keys = seen[0] + seen[1]
    assert sorted(keys) == sorted(pipe.entities.select("train").frame["key"])


def test_a_stream_starts_when_half_a_cpu_is_free(ray_session, demo_archive) -> None:
    """A rank builds its stream while the other ranks' paused decode tasks hold the cluster's
    CPUs: creating the dataset must start no task of its own (Ray's from_pandas waited for
    1-CPU metadata tasks and hung a 1000-step run on 2 cores)."""
    import threading

    from ray.util.placement_group import placement_group, remove_placement_group

    busy = placement_group([{"CPU": 1.5}])  # what the other ranks' tasks hold
    ray_session.get(busy.ready(), timeout=60)
    pipe = open_archive(demo_archive, CFG.model_copy(update={"decode_cpus": 0.5}))
    got: dict = {}

    def first_batch() -> None:
        for diagnostics in (True, False):
            ds = pipe.dataset("train", epochs=40, rows_per_task=2, diagnostics=diagnostics)
            got[diagnostics] = ds.take(2)

    thread = threading.Thread(target=first_batch, daemon=True)
    thread.start()
    thread.join(timeout=90)
    remove_placement_group(busy)
    assert not thread.is_alive(), "building the stream waited for CPUs it can never get"
    assert len(got[True]) == len(got[False]) == 2


def test_corrupt_zoo_exact_counts(ray_session, tmp_path) -> None:
    root = tmp_path / "zoo"
    expected = make_corrupt_archive(str(root), seed=0)
    cfg = DataConfig(max_bad_fraction=1.0, clip_seconds=0.5, image_size=32)
    summary = inspect_archive(str(root), cfg, out_dir=str(tmp_path / "out"), progress=False)
    for view in ("audio", "image"):
        good, bad = expected.counts(view)
        bad += sum(v == view for _, v, _ in expected.archive_bad)  # e.g. an unusable URI
        assert summary["views"][view]["present"] == good, view  # every good record kept
        assert summary["views"][view]["bad"] == bad, view
    table = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pandas()
    masked = table["reason"].isin([NON_NUMERIC, INFINITE_VALUE]).to_numpy()  # cells, not records
    quarantine = table[~masked]
    got = set(zip(quarantine["key"], quarantine["view"], quarantine["reason"], strict=True))
    want = {(k, v, r) for (k, v), r in expected.decode.items() if r is not None}
    assert got == want | expected.archive_bad
    assert len(got) == len(quarantine)  # each bad record exactly once
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    ratings = saved["bad_ratings"]  # counted in ratings, not against views
    assert ratings["bad"] == sum(v == "relevance" for _, v, _ in expected.archive_bad)
    assert saved["bad_records"] + ratings["bad"] == len(quarantine)
    cells = Counter()
    for reasons in saved["masked_log_cells"].values():
        cells.update({reason: entry["count"] for reason, entry in reasons.items()})
    assert cells == {r: n for r, n in expected.log_problems.items() if r != ALL_ROWS_UNUSABLE}
    assert set(table["key"][masked]) == {"truncated-wav", "logs-only"}


def test_bad_share_guard(ray_session, tmp_path) -> None:
    root = tmp_path / "zoo"
    make_corrupt_archive(str(root), seed=1)
    cfg = DataConfig(max_bad_fraction=0.05, clip_seconds=0.5, image_size=32)
    summary = inspect_archive(str(root), cfg, progress=False)
    assert not summary["ok"]
    pipe = open_archive(str(root), cfg)
    with pytest.raises(TooManyBadRecords, match="data.max_bad_fraction"):
        for _ in iter_hetero_batches(pipe.dataset("all"), 4, quarantine=QuarantineLog(),
                                     max_bad_fraction=0.05, min_records=4):
            pass


@pytest.mark.s3
def test_archive_on_s3(ray_session, s3_endpoint, tmp_path) -> None:
    from s3_fixture import make_bucket

    from raysys.data.demo import make_demo_archive

    make_bucket(s3_endpoint, "archives")
    make_demo_archive("s3://archives/demo", entities=10, seed=3, missing_fraction=0.1)
    make_demo_archive(str(tmp_path / "local"), entities=10, seed=3, missing_fraction=0.1)
    remote = _collect(open_archive("s3://archives/demo", CFG).dataset("all", shuffle=False))
    local = _collect(open_archive(str(tmp_path / "local"), CFG).dataset("all", shuffle=False))
    assert (remote["error.audio"] == "").all() and remote["audio_present"].sum() >= 8
    np.testing.assert_array_equal(remote["audio"], local["audio"])
    np.testing.assert_array_equal(remote["image"], local["image"])
