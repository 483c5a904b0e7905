"""`raysys embed`: windows, config and mismatch errors (no Ray), then real runs on a local Ray
instance: output equal to the plain single-process loop, float16 + per-window vectors, rerun
skipping completed shards, foreign outputs refused, and the corrupt-file zoo quarantined.

The model is a seeded, untrained export written with `raysys.train.export.export_model` (the
trainer's export format), not a pretraining run: embedding correctness does not need training.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_embed_helpers import assert_same_embeddings, embed_cfg, read_output, tiny_export

from raysys.config import ConfigError
from raysys.data import fs
from raysys.data.demo import make_demo_archive
from raysys.data.zoo import GOOD, make_corrupt_archive
from raysys.embed import EmbedError, run_embed, verify_output
from raysys.embed.cli import main as embed_main
from raysys.embed.config import load_embed_config
from raysys.embed.embedder import select_device
from raysys.embed.job import actor_gpus
from raysys.embed.preprocess import window_starts
from raysys.embed.reference import plain_embed


@pytest.fixture(scope="module")
def export(demo_archive, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp("export") / "model")
    tiny_export(demo_archive, out)
    return out


def test_windows_cover_the_file_and_end_aligned() -> None:
    assert window_starts(50, 100, 100).tolist() == [0]          # short: one padded window
    assert window_starts(100, 100, 100).tolist() == [0]
    assert window_starts(250, 100, 100).tolist() == [0, 100, 150]  # last aligned to the end
    assert window_starts(300, 100, 50).tolist() == [0, 50, 100, 150, 200]
    assert window_starts(1000, 100, 100, max_windows=4).tolist() == [0, 300, 600, 900]


def test_config_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="embed.actors"):
        load_embed_config(["actors=0"])
    with pytest.raises(ConfigError, match="embed.audio.poll: unknown key"):
        load_embed_config(["audio.poll=max"])
    assert load_embed_config(["embed.dtype=float16"]).dtype == "float16"


def test_gpus_per_actor_default_explicit_and_fractional() -> None:
    assert actor_gpus(None, 0.0, 2)[0] == 0.0       # no GPU now: CPU, and the line says why
    assert "gpus_per_actor" in actor_gpus(None, 0.0, 2)[1]
    assert actor_gpus(None, 4.0, 2) == (1.0, "embed: inference on GPU (1 per actor, 2 actor(s))")
    assert actor_gpus(0.25, 1.0, 4) == (0.25, "embed: inference on GPU (0.25 per actor, "
                                              "4 actor(s))")  # four actors share one GPU
    assert actor_gpus(0.0, 8.0, 1)[0] == 0.0        # explicit CPU on a GPU cluster
    gpus, line = actor_gpus(1.0, 0.0, 2)            # autoscaling cluster: kept, and said so
    assert gpus == 1.0 and "wait for GPU nodes" in line
    with pytest.raises(ConfigError, match="embed.gpus_per_actor: .*whole number"):
        load_embed_config(["gpus_per_actor=1.5"])
    assert load_embed_config(["gpus_per_actor=2"]).gpus_per_actor == 2


def test_actor_device_follows_its_gpu_and_never_silently_falls_back() -> None:
    assert select_device(False) == "cpu"
    assert select_device(True, cuda_available=True) == "cuda"
    with pytest.raises(EmbedError, match="gpus_per_actor=0"):
        select_device(True, cuda_available=False)


def test_mismatched_checkpoint_fails_before_any_work(demo_archive, tmp_path) -> None:
    av, audio_only, full = (str(tmp_path / n) for n in ("av", "a", "full"))
    tiny_export(demo_archive, av, modalities=["audio", "image"])
    tiny_export(demo_archive, audio_only, modalities=["audio"])
    tiny_export(demo_archive, full)
    out = tmp_path / "out"
    with pytest.raises(EmbedError, match=r"no encoder for \['tabular'\]"):
        run_embed(av, demo_archive, str(out), embed_cfg(views=["tabular"]))
    # an archive without audio shares no view with an audio-only model
    images = tmp_path / "images"
    make_demo_archive(str(images), entities=4, seed=1)
    manifest = pq.read_table(images / "manifest.parquet")
    column = manifest.schema.get_field_index("audio")
    manifest = manifest.set_column(column, "audio", pa.nulls(manifest.num_rows, pa.string()))
    pq.write_table(manifest, images / "manifest.parquet")
    with pytest.raises(EmbedError, match="no view in common"):
        run_embed(audio_only, str(images), str(out), embed_cfg())
    with pytest.raises(EmbedError, match=r"has no \['audio'\] records"):
        run_embed(full, str(images), str(out), embed_cfg(views=["audio", "image"]))
    # the export's tabular columns must exist in the archive's logs
    logs = pq.read_table(images / "logs.parquet")
    pq.write_table(logs.drop_columns([logs.column_names[-1]]), images / "logs.parquet")
    with pytest.raises(EmbedError, match="log columns"):
        run_embed(full, str(images), str(out), embed_cfg(views=["image", "tabular"]))
    assert not out.exists()  # nothing was written: every check runs before any work
    assert embed_main(["--checkpoint", av, "--archive", demo_archive, "--output", str(out),
                       "--views", "tabular"]) == 2


@pytest.mark.slow
def test_embed_equals_plain_loop_resumes_and_refuses_foreign(ray_session, export, demo_archive,
                                                             tmp_path) -> None:
    out = str(tmp_path / "emb")
    cfg = embed_cfg(shard_entities=5, batch_size=4, actors=2)
    summary = run_embed(export, demo_archive, out, cfg)
    assert summary["shards"] == summary["shards_embedded"] == 5 and summary["quarantined"] == 0
    got = read_output(out)
    assert got.columns.tolist() == ["key", "view", "embedding", "model_id", "config_hash"]
    assert (got["model_id"] == summary["model_id"]).all()
    assert_same_embeddings(got, plain_embed(export, demo_archive, cfg))
    norms = np.linalg.norm(np.stack(got["embedding"]), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)
    report = verify_output(out, demo_archive)
    assert report["ok"], report["problems"]
    assert report["rows"] == report["expected"] == summary["rows_embedded"]
    manifest = json.loads(fs.read_bytes(f"{out}/_SUCCESS"))
    assert sum(s["rows"] for s in manifest["shards"]) == len(got)
    # a rerun of a finished job skips everything and changes nothing
    again = run_embed(export, demo_archive, out, cfg)
    assert again["shards_skipped"] == 5 and again["rows_embedded"] == 0
    assert_same_embeddings(read_output(out), got, atol=0)
    with pytest.raises(EmbedError, match="config_hash"):
        run_embed(export, demo_archive, out, embed_cfg(shard_entities=5, dtype="float16"))


@pytest.mark.slow
def test_float16_with_per_window_vectors(ray_session, export, demo_archive, tmp_path) -> None:
    out = str(tmp_path / "emb16")
    cfg = embed_cfg(dtype="float16", views=["audio"], shard_entities=12,
                    audio={"keep_windows": True, "hop_seconds": 0.25})
    run_embed(export, demo_archive, out, cfg)
    table = pq.read_table(f"{out}/part-000000.parquet")
    kind = table.schema.field("embedding").type
    assert pa.types.is_fixed_size_list(kind) and kind.list_size == 32
    assert kind.value_type == pa.float16()
    got = read_output(out)
    assert set(got["view"]) == {"audio"}
    assert_same_embeddings(got, plain_embed(export, demo_archive, cfg), atol=2e-3)
    for _, row in got.iterrows():
        windows = np.stack(row["window_embeddings"]).astype(np.float32)
        starts = np.asarray(row["window_start_s"])
        assert len(windows) == len(starts) >= 2   # ~3 s of audio in 0.5 s windows, hop 0.25 s
        assert starts[0] == 0 and np.all(np.diff(starts) > 0)
        pooled = windows.mean(0) / np.linalg.norm(windows.mean(0))
        np.testing.assert_allclose(pooled, np.asarray(row["embedding"], np.float32), atol=3e-3)


@pytest.mark.slow
def test_corrupt_zoo_is_quarantined_and_the_job_completes(ray_session, tmp_path) -> None:
    archive, out = str(tmp_path / "zoo"), str(tmp_path / "emb")
    expected = make_corrupt_archive(archive, seed=0)
    tiny_export(archive, str(tmp_path / "model"))
    summary = run_embed(str(tmp_path / "model"), archive, out, embed_cfg(shard_entities=4))
    bad = pq.read_table(f"{out}/_quarantine.parquet").to_pandas()
    decode_bad = {(k, v, r) for (k, v), r in expected.decode.items() if r is not GOOD}
    got_bad = set(zip(bad["key"], bad["view"], bad["reason"], strict=True))
    assert decode_bad <= got_bad
    archive_bad = {t for t in expected.archive_bad if t[1] in ("audio", "image", "tabular",
                                                                "entity")}
    assert got_bad == decode_bad | archive_bad
    assert summary["quarantined"] == len(bad)
    good = {(k, v) for (k, v), r in expected.decode.items() if r is GOOD}
    embedded = set(zip(read_output(out)["key"], read_output(out)["view"], strict=True))
    assert good <= embedded and not embedded & {(k, v) for k, v, _ in got_bad}
    report = verify_output(out, archive)
    assert report["ok"], report["problems"]


def test_a_loev_plus_plus_branch_is_embedded_like_a_head(demo_archive, tmp_path) -> None:
    """`head=pitch_shift_branch` writes the branch before its projection (the encoder's width,
    L2-normalised) for the views that have it; asking it of a view without the branch, or a
    head the checkpoint lacks, fails before any work, naming what the checkpoint has."""
    from raysys.config import load_config
    from raysys.embed.plan import plan_job
    from raysys.embed.reference import random_export
    from raysys.train.export import load_model

    cfg = load_config("configs/tiny.yaml", ["data.modalities=[audio,image]",
                                            "model.loev_heads=[pitch_shift]",
                                            "model.loev_plus_plus=true"])
    checkpoint = str(tmp_path / "model")
    random_export(demo_archive, checkpoint, cfg.data, cfg.model, seed=0)
    width = load_model(checkpoint)[0].encoders["audio"].out_dim
    assert width != cfg.model.embed_dim
    branch = plain_embed(checkpoint, demo_archive,
                         embed_cfg(head="pitch_shift_branch", views=["audio"]))
    head = plain_embed(checkpoint, demo_archive, embed_cfg(head="pitch_shift", views=["audio"]))
    assert len(branch) == len(head) > 0 and branch["key"].tolist() == head["key"].tolist()
    vectors = np.stack(branch["embedding"].to_numpy())
    assert vectors.shape[1] == width
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.stack(head["embedding"].to_numpy()).shape[1] == cfg.model.embed_dim
    assert plan_job(checkpoint, demo_archive, embed_cfg(head="pitch_shift_branch",
                                                        views=["audio"])).dim == width
    out = tmp_path / "out"
    with pytest.raises(EmbedError, match=r"pitch_shift_branch.*no such output for \['image'\]"):
        run_embed(checkpoint, demo_archive, str(out),
                  embed_cfg(head="pitch_shift_branch", views=["audio", "image"]))
    with pytest.raises(EmbedError, match=r"'time_stretch'.*no such output.*'pitch_shift'"):
        run_embed(checkpoint, demo_archive, str(out), embed_cfg(head="time_stretch"))
    assert not out.exists()
