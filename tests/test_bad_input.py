"""Bad input the archive loader, decoder and pipeline must survive (issue 16): each test writes
real files (manifests, WAVs, FIFOs, logs) and asserts the exact outcome."""

from __future__ import annotations

import pytest

from raysys.data.archive import ArchiveError, load_manifest

# -- 1. a CSV manifest never merges rows --------------------------------------------------------


def _write_csv(root, text: str) -> str:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text(text)
    return str(root)


def test_csv_unbalanced_quote_is_an_error_naming_the_lines(tmp_path):
    text = ('key,audio,image,label\n'
            'a,"a.wav,a.png,1\n'        # quote opened on line 2 ...
            'b,b.wav,b.png,2\n'
            'c,c.wav",c.png,3\n'        # ... closed on line 4: pandas merges a, b, c
            'd,d.wav,d.png,4\n')
    root = _write_csv(tmp_path / "arch", text)
    with pytest.raises(ArchiveError, match=r"manifest\.csv: lines 2-4: one record spans 3 lines"):
        load_manifest(root)


def test_csv_quote_never_closed_is_an_error(tmp_path):
    root = _write_csv(tmp_path / "arch", 'key,audio\na,a.wav\nb,"b.wav\nc,c.wav\n')
    with pytest.raises(ArchiveError, match=r"manifest\.csv: line"):
        load_manifest(root)


def test_csv_row_with_missing_fields_is_an_error(tmp_path):
    root = _write_csv(tmp_path / "arch", "key,audio,image\na,a.wav,a.png\nb,b.png\n")
    with pytest.raises(ArchiveError, match=r"manifest\.csv: line 3: 2 fields, the header has 3"):
        load_manifest(root)


def test_csv_quoted_commas_blank_lines_and_crlf_still_load(tmp_path):
    text = 'key,audio,label\r\n"a",a.wav,"x, y"\r\n\r\nb,"b,1.wav",z\r\n'
    manifest, bad = load_manifest(_write_csv(tmp_path / "arch", text))
    assert bad == [] and manifest.keys == ["a", "b"]
    assert manifest.views["audio"][1].endswith("/b,1.wav")
    assert manifest.labels["label"].tolist() == ["x, y", "z"]


# -- 2. odd sample rates resample in bounded memory ---------------------------------------------

_RESAMPLE_PROBE = """
import json, resource, sys
import numpy as np
import psutil
import scipy.signal  # imported up front: module imports are not resampling memory
from raysys.data import decode as d
d.resample(np.zeros(4410, np.float32), 44100, 16000)  # torch warmed up
# a safety cap: a runaway kernel fails here instead of eating the machine
rss = psutil.Process().memory_info().rss
resource.setrlimit(resource.RLIMIT_DATA, (rss + 2**31, resource.getrlimit(resource.RLIMIT_DATA)[1]))
out = {}
for rate in map(int, sys.argv[1:]):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = np.arange(2 * rate) / rate
    wave = (0.5 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    try:
        y = d.resample(wave, rate, 16000)
    except Exception as e:
        out[rate] = {"error": f"{type(e).__name__}: {e}"[:200]}
        continue
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y)), n=16 * len(y)))
    freq = float(np.argmax(spectrum)) * 16000 / (16 * len(y))
    out[rate] = {"peak_mib": peak, "freq": freq, "n": len(y), "dtype": str(y.dtype)}
print(json.dumps(out))
"""


def test_odd_sample_rates_resample_in_bounded_memory_and_keep_pitch(tmp_path):
    """8001 and 22051 Hz share no factor with 16000: torchaudio's kernel alone took 5-12 GB."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", _RESAMPLE_PROBE, "8001", "22051"], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(done.stdout.strip().splitlines()[-1])
    for rate in ("8001", "22051"):
        r = got[rate]
        assert "error" not in r, (rate, r)
        assert r["peak_mib"] < 64, (rate, r)  # was > 2 GiB (the cap) before
        assert abs(r["freq"] - 440.0) < 0.2, (rate, r)  # the pitch is kept
        assert r["n"] == -(-2 * int(rate) * 16000 // int(rate)) and r["dtype"] == "float32"


def test_resample_factors_are_exact_or_bounded():
    from raysys.data.decode import RESAMPLE_MAX_FACTOR, resample_factors

    assert resample_factors(44100, 16000) == (441, 160)
    assert resample_factors(8001, 16000) == (8001, 16000)
    down, up = resample_factors(1_000_003, 16000)
    assert max(down, up) <= RESAMPLE_MAX_FACTOR
    assert abs(up / down / (16000 / 1_000_003) - 1) < 1e-5  # 0.01 cent


# -- 3. an archive without logs.parquet: the tabular modality is absent -------------------------


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> str:
    """An 8-entity demo archive (every test copies it before breaking it)."""
    from raysys.data.demo import make_demo_archive

    root = tmp_path_factory.mktemp("small") / "demo"
    make_demo_archive(str(root), entities=8, seed=5, missing_fraction=0.0)
    return str(root)


def copy_archive(src: str, dst) -> str:
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


def build_rows(pipe, split: str = "all") -> dict:
    """Decode and build every entity of a split in-process (the pipeline's RowBuilder, no Ray)."""
    from raysys.data.rows import RowBuilder

    plan = pipe.plan(split, shuffle=False).rows()
    return RowBuilder(pipe.cfg, pipe.stats, pipe.info.logs)(plan)


def test_no_logs_parquet_makes_tabular_absent_not_a_crash(small_demo, tmp_path):
    from raysys.data.config import DataConfig
    from raysys.data.pipeline import open_archive

    root = copy_archive(small_demo, tmp_path / "nologs")
    (tmp_path / "nologs" / "logs.parquet").unlink()
    pipe = open_archive(root, DataConfig(clip_seconds=0.5, image_size=32))
    assert pipe.cfg.modalities == ["audio", "image"]
    assert len(pipe.notes) == 1 and "no logs.parquet: the tabular modality is absent" in (
        pipe.notes[0])
    rows = build_rows(pipe)
    assert rows["audio_present"].all() and rows["image_present"].all()
    assert "tabular_present" not in rows and not any(rows["error.tabular"])
    with pytest.raises(ArchiveError, match="no logs.parquet, and data.modalities is"):
        open_archive(root, DataConfig(modalities=["tabular"]))


def test_no_logs_parquet_pretraining_prepares_a_model_without_tabular(small_demo, tmp_path):
    from raysys.config import load_config
    from raysys.models.multimodal import MultiViewModel
    from raysys.train.driver import prepare
    from raysys.train.loop import model_inputs

    root = copy_archive(small_demo, tmp_path / "nologs")
    (tmp_path / "nologs" / "logs.parquet").unlink()
    cfg = load_config("configs/tiny.yaml", [f"archive={root}", f"out={tmp_path}/run"])
    pipe = prepare(cfg)
    assert cfg.data.modalities == ["audio", "image"]
    model = MultiViewModel(cfg.model, model_inputs(cfg, pipe))
    assert set(model.encoders) == {"audio", "image"}


def test_no_logs_parquet_leaves_one_modality_and_no_default_cross_head(small_demo, tmp_path):
    from raysys.config import ConfigError, load_config
    from raysys.train.driver import prepare

    root = copy_archive(small_demo, tmp_path / "nologs")
    (tmp_path / "nologs" / "logs.parquet").unlink()
    over = [f"archive={root}", f"out={tmp_path}/run", "data.modalities=[audio,tabular]"]
    cfg = load_config("configs/tiny.yaml", over)
    assert cfg.model.cross_head is True  # two modalities asked for
    prepare(cfg)
    assert cfg.data.modalities == ["audio"] and cfg.model.cross_head is False
    explicit = load_config("configs/tiny.yaml", [*over, "model.cross_head=true"])
    with pytest.raises(ConfigError, match="no cross-modal pairs for a cross head"):
        prepare(explicit)


# -- 4. finite but huge float audio: non-finite features are quarantined ------------------------


def manifest_frame(root: str):
    import pyarrow.parquet as pq

    return pq.read_table(f"{root}/manifest.parquet").to_pandas()


def write_float_wav(path: str, value: float, rate: int = 16000, seconds: float = 1.0) -> None:
    import numpy as np
    import soundfile as sf

    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (value * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate,
             format="WAV", subtype="FLOAT")


@pytest.mark.parametrize("augment", [False, True])
def test_huge_float_audio_is_quarantined_with_its_reason(small_demo, tmp_path, augment):
    import numpy as np

    from raysys.data.config import DataConfig
    from raysys.data.pipeline import open_archive

    root = copy_archive(small_demo, tmp_path / "huge")
    frame = manifest_frame(root)
    victim = frame["key"].iloc[2]
    write_float_wav(f"{root}/{frame['audio'].iloc[2]}", 1e30)  # finite, but power overflows
    cfg = DataConfig(clip_seconds=0.5, image_size=32)
    cfg.augment.enabled = augment
    rows = build_rows(open_archive(root, cfg))
    bad = rows["key"] == victim
    assert str(rows["error.audio"][bad][0]).startswith("non-finite features: ")
    assert not rows["audio_present"][bad][0] and rows["image_present"][bad][0]
    assert rows["audio_present"][~bad].all() and not any(rows["error.audio"][~bad])
    assert np.isfinite(rows["audio"]).all()


# -- 5. a FIFO or other non-regular file never hangs a job --------------------------------------


def _in_thread(fn, timeout_s: float):
    """fn() in a daemon thread: (finished, result or exception). A hang is a test failure, not a
    hung test session."""
    import threading

    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - returned to the test
            box["value"] = e

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return not thread.is_alive(), box.get("value")


def _release_fifo(path: str) -> None:
    """Let a reader stuck on the FIFO go (it sees a writer, then EOF)."""
    import contextlib
    import os

    with contextlib.suppress(OSError):  # no reader left
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def test_fifo_and_devices_are_not_read(tmp_path):
    import os

    from raysys.data import decode as d

    fifo = str(tmp_path / "a.wav")
    os.mkfifo(fifo)
    os.symlink(fifo, tmp_path / "link.png")
    try:
        for load, uri in ((lambda u: d.load_audio(u, sample_rate=16000), fifo),
                          (d.load_image, str(tmp_path / "link.png"))):
            finished, got = _in_thread(lambda load=load, uri=uri: load(uri), 5.0)
            assert finished, f"reading {uri} hung"
            assert isinstance(got, d.DecodeError) and got.reason == d.NOT_REGULAR_FILE, got
            assert "is a FIFO, not a regular file" in got.detail
    finally:
        _release_fifo(fifo)
    with pytest.raises(d.DecodeError, match="is a character device, not a regular file"):
        d.load_image("/dev/zero")  # would never end
    with pytest.raises(d.DecodeError, match="not a regular file: .*is a directory"):
        d.load_image(str(tmp_path))


def test_a_stuck_read_times_out(tmp_path):
    import os
    import time

    from raysys.data import fs

    fifo = str(tmp_path / "stuck")
    os.mkfifo(fifo)

    def stuck() -> bytes:
        with open(fifo, "rb") as f:
            return f.read()

    start = time.monotonic()
    try:  # a real stuck read: a blocking open of a FIFO nobody writes
        with pytest.raises(fs.ReadTimeout, match=r"stuck: no result after 0\.5 s"):
            fs.call_with_timeout(stuck, 0.5, "stuck")
    finally:
        _release_fifo(fifo)
    assert time.monotonic() - start < 3
    assert fs.call_with_timeout(lambda: 7, 0.5, "quick") == 7
    with pytest.raises(ZeroDivisionError):
        fs.call_with_timeout(lambda: 1 / 0, 0.5, "fails")


def test_fifo_media_path_is_a_quarantined_record(small_demo, tmp_path):
    import os

    from raysys.data.config import DataConfig
    from raysys.data.pipeline import open_archive

    root = copy_archive(small_demo, tmp_path / "fifo")
    frame = manifest_frame(root)
    victim, image = frame["key"].iloc[1], f"{root}/{frame['image'].iloc[1]}"
    os.unlink(image)
    os.mkfifo(image)
    pipe = open_archive(root, DataConfig(clip_seconds=0.5, image_size=32))
    try:
        finished, rows = _in_thread(lambda: build_rows(pipe), 60.0)
    finally:
        _release_fifo(image)
    assert finished, "a FIFO hung the decode"
    bad = rows["key"] == victim
    assert str(rows["error.image"][bad][0]).startswith("not a regular file: ")
    assert rows["image_present"].sum() == len(frame) - 1 and rows["audio_present"].all()


# -- 8. a log view with every row unusable is quarantined AND absent ----------------------------


def test_all_unusable_log_rows_are_quarantined_and_absent(small_demo, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysys.data.config import DataConfig
    from raysys.data.pipeline import open_archive

    root = copy_archive(small_demo, tmp_path / "unusable")
    logs = pq.read_table(f"{root}/logs.parquet").to_pandas()
    victim = manifest_frame(root)["key"].iloc[3]
    rows = (logs["key"] == victim).to_numpy()
    for column in logs.columns.drop(["key", "time"], errors="ignore"):
        logs[column] = logs[column].astype(object)
        logs.loc[rows, column] = None  # null numbers and categories: nothing usable
    pq.write_table(pa.Table.from_pandas(logs, preserve_index=False), f"{root}/logs.parquet")
    pipe = open_archive(root, DataConfig(clip_seconds=0.5, image_size=32))
    bad = [(r.key, r.view, r.reason) for r in pipe.info.bad]
    assert bad == [(victim, "tabular", "all log rows unusable")]
    assert victim not in pipe.info.logs.spans
    assert not pipe.entities.frame.set_index("key").loc[victim, "has_logs"]
    built = build_rows(pipe)
    is_victim = built["key"] == victim
    assert not built["tabular_present"][is_victim][0]
    assert built["tabular_present"][~is_victim].all()


# -- 9. zero usable entities is an error ----------------------------------------------------------


@pytest.mark.parametrize("text", ["key,audio,image\n", "key,audio,image\na,,\nb,,\n"])
def test_no_usable_entity_is_an_error(tmp_path, text):
    from raysys.data.config import DataConfig
    from raysys.data.pipeline import open_archive

    root = _write_csv(tmp_path / "arch", text)
    with pytest.raises(ArchiveError, match=r"manifest\.csv: no usable entity"):
        open_archive(root, DataConfig())  # what inspect, pretraining and evaluation open


# -- 7. text and +-inf in numeric log columns are reported per column, with examples -------------


def test_text_and_inf_log_cells_are_counted_per_column_with_examples(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from raysys.data.archive import load_archive, masked_cell_records, masked_cells
    from raysys.data.quarantine import QuarantineLog

    root = tmp_path / "arch"
    root.mkdir()
    pq.write_table(pa.table({"key": ["a", "b"], "audio": ["a.wav", "b.wav"]}),
                   root / "manifest.parquet")
    level = ["1.0", "abc", "2.0", "inf"] + [f"{i}.5" for i in range(19)] + ["x"]  # 92% numbers
    speed = [1.0, np.inf, -np.inf] + [1.0] * 21
    keys = ["a"] * 12 + ["b"] * 12
    pq.write_table(pa.table({"key": keys, "level": level, "speed": speed}),
                   root / "logs.parquet")
    logs = load_archive(str(root)).logs
    cells = masked_cells(logs)
    assert cells["level"]["non-numeric value"] == {
        "count": 2, "examples": ["a row 2: 'abc'", "b row 24: 'x'"]}
    assert cells["level"]["infinite value"]["count"] == 1
    assert cells["speed"]["infinite value"] == {
        "count": 2, "examples": ["a row 2: 'inf'", "a row 3: '-inf'"]}
    q = QuarantineLog()
    q.add_masked(masked_cell_records(logs))
    assert q.total_bad == 0  # masked cells are reported, not bad records
    q.write(str(tmp_path / "quarantine.parquet"))
    table = pq.read_table(tmp_path / "quarantine.parquet").to_pandas()
    assert len(table) == 4 and set(table["view"]) == {"tabular"}
    row = table[(table["key"] == "a") & (table["reason"] == "infinite value")
                & table["detail"].str.startswith("column 'speed'")].iloc[0]
    assert row["detail"] == "column 'speed': 2 cells masked, e.g. row 2: 'inf', row 3: '-inf'"


# -- 6. bad relevance ratings count in ratings, with one rule for inspect and pretraining --------


def _write_ratings(root: str, keys: list[str], n: int, bad: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pairs = [(q, c) for q in keys for c in keys if q != c][:n]
    ratings = [150.0 if i < bad else 50.0 for i in range(n)]  # `bad` out of range
    pq.write_table(pa.table({"query": [q for q, _ in pairs], "candidate": [c for _, c in pairs],
                             "relevance": ratings}), f"{root}/relevance.parquet")


def test_bad_ratings_are_counted_in_ratings_not_views(small_demo, tmp_path):
    from raysys.config import load_config
    from raysys.data.archive import load_archive
    from raysys.data.quarantine import QuarantineLog, TooManyBadRecords, ratings_problem
    from raysys.train.driver import prepare

    root = copy_archive(small_demo, tmp_path / "ratings")
    keys = manifest_frame(root)["key"].tolist()
    _write_ratings(root, keys, 50, bad=2)  # 4 % of the ratings
    info = load_archive(root)
    q = QuarantineLog()
    q.add_archive_records(info.bad)
    assert q.total_bad == 0 and q.bad_fraction == 0.0  # views are untouched (was 2 of 2)
    assert ratings_problem(info, 0.05) is None
    cfg = load_config("configs/tiny.yaml", [f"archive={root}", f"out={tmp_path}/run"])
    prepare(cfg)  # pretraining accepts what inspect accepts
    _write_ratings(root, keys, 50, bad=5)  # 10 %
    message = ratings_problem(load_archive(root), 0.05)
    assert message and "5 of 50 relevance ratings are bad (10.0% > data.max_bad_fraction=5.0%)" in (
        message)
    with pytest.raises(TooManyBadRecords, match="5 of 50 relevance ratings are bad"):
        prepare(cfg)  # and refuses what inspect refuses
