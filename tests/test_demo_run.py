"""The demo path: held-out diagnostics on known geometry, and `raysys demo` end to end (small)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysys.train.diagnostics import (
    EmbeddedSplit,
    compare_to_baseline,
    headline,
    relevance_retrieval,
)

CLASSES, PER_CLASS, DIM = 6, 12, 16


def make_split(separated: bool, seed: int = 0) -> EmbeddedSplit:
    """Audio and image embeddings of 72 entities: class clusters (+ the entity's own offset,
    shared by both modalities) or pure noise."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(CLASSES), PER_CLASS)
    n = y.size
    centres = rng.normal(size=(CLASSES, DIM)) * 3
    own = rng.normal(size=(n, DIM))
    base = centres[y] + own if separated else rng.normal(size=(n, DIM))
    emb = {m: base + 0.05 * rng.normal(size=(n, DIM)) for m in ("audio", "image")}
    emb = {m: e / np.linalg.norm(e, axis=1, keepdims=True) for m, e in emb.items()}
    present = {"audio": np.ones(n, bool), "image": np.arange(n) % 7 != 0}
    keys = [f"k{i:03d}" for i in range(n)]
    return EmbeddedSplit(keys=keys, entity_ids=np.arange(n), embeddings=emb, present=present,
                         backbone={m: e * 2 for m, e in emb.items()},
                         labels=pd.DataFrame({"key": keys, "label": y}))


def test_compare_separated_vs_noise():
    good, noise = make_split(True), make_split(False, seed=1)
    report = compare_to_baseline(good, noise, seed=0)
    t, r = report["trained"]["spaces"]["fused"], report["random_init"]["spaces"]["fused"]
    assert t["ncc_test"] == 1.0 and r["ncc_test"] < 0.5
    assert t["cdnv"] < 0.1 < r["cdnv"]
    assert t["few_shot_5way_5shot"]["mean"] > 0.95
    assert r["few_shot_5way_5shot"]["mean"] < 0.5
    # the image space only covers the entities that have an image
    assert report["trained"]["spaces"]["image"]["n"] == int(good.present["image"].sum())
    # the same entity's other modality is its nearest neighbour
    assert report["trained"]["cross_modal"]["audio->image"]["R@1"] == 1.0
    rows = {name: (a, b, chance) for name, a, b, chance in headline(report)}
    assert rows["NCC accuracy (fused, test)"] == (1.0, r["ncc_test"], 1 / CLASSES)
    assert rows["5way_5shot few-shot (fused)"][2] == 0.2
    image = report["trained"]["spaces"]["image"]
    assert rows["NCC accuracy (image, test)"][0] == image["ncc_test"]
    assert rows["NCC accuracy (image, test)"][2] == 1 / image["classes"]
    json.dumps(report, allow_nan=False)  # strict JSON


def test_too_few_entities_are_reported_as_skipped():
    small = make_split(True)
    keep = slice(0, 14)  # 2 classes only
    small = EmbeddedSplit(small.keys[keep], small.entity_ids[keep],
                          {m: e[keep] for m, e in small.embeddings.items()},
                          {m: p[keep] for m, p in small.present.items()},
                          labels=small.labels.iloc[keep].reset_index(drop=True))
    fused = compare_to_baseline(small, small)["trained"]["spaces"]["fused"]
    assert "skipped" in fused["few_shot_5way_5shot"]
    assert isinstance(fused["ncc_test"], float)


def test_relevance_ndcg_follows_the_ratings():
    x = np.eye(4)[[0, 0, 1, 2]] + np.array([[0, 0, 0, 0], [0.1, 0, 0, 0], [0.5, 0, 0, 0],
                                           [0.2, 0, 0, 0]])
    keys = ["a", "b", "c", "d"]
    ratings = pd.DataFrame({"query": ["a", "a", "a", "a", "z"],
                            "candidate": ["b", "c", "d", "a", "b"],
                            "relevance": [90.0, 50.0, 10.0, 100.0, 70.0]})
    out = relevance_retrieval(x, np.ones(4, bool), keys, ratings)
    assert out["queries"] == 1 and out["ratings"] == 3  # self and unknown keys dropped
    assert out["nDCG@10"] == pytest.approx(1.0)
    reversed_ratings = ratings.assign(relevance=[10.0, 50.0, 90.0, 100.0, 70.0])
    assert relevance_retrieval(x, np.ones(4, bool), keys, reversed_ratings)["nDCG@10"] < 0.9


SMALL = [
    "train.steps=6", "train.warmup_steps=2", "train.log_every=2", "train.checkpoint_every=3",
    "data.batch_size=8", "data.image_size=32", "data.clip_seconds=0.5", "data.audio.n_bins=32",
    "data.tabular_window=6", "data.eval_fraction=0.5", "model.embed_dim=32",
    "model.proj_hidden=32", "objective.negatives.queue_size=32",
]


@pytest.mark.slow
def test_demo_end_to_end(ray_session, tmp_path, capsys):
    from raysys.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--entities", "32", *SMALL]) == 0
    printed = capsys.readouterr().out
    run = out / "run"
    for path in ("archive/manifest.parquet", "inspect/summary.json", "inspect/quarantine.parquet",
                 "run/config.yaml", "run/metrics.jsonl", "run/model/model.pt",
                 "run/model/model.json", "run/summary.json", "run/eval_demo.json",
                 "run/eval/eval.json", "run/eval/report.md", "run/eval/projection.png"):
        assert (out / path).exists(), path
    assert any((run / "tensorboard").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["checkpoint"]).name == "step_00000006"

    report = json.loads((run / "eval_demo.json").read_text())
    meta = json.loads((run / "model" / "model.json").read_text())
    assert report["model_id"] == meta["model_id"] and report["step"] == 6
    assert report["entities"] >= 8
    for side in ("trained", "random_init"):
        spaces = report[side]["spaces"]
        assert {"fused", "audio", "image", "tabular", "backbone.audio"} <= set(spaces)
        ncc = spaces["fused"]["ncc_train"]  # ~16 eval entities: may be too few to split
        assert 0.0 <= ncc <= 1.0 if isinstance(ncc, float) else "skipped" in ncc
        assert spaces["fused"]["n"] == report["entities"]
        assert isinstance(report[side]["cross_modal"]["audio->image"]["R@1"], float)
        assert "nDCG@10" in report[side]["relevance"] or "skipped" in report[side]["relevance"]
    # trained and random-init embeddings differ (the export is not the initial model)
    assert report["trained"]["cross_modal"] != report["random_init"]["cross_modal"]

    for text in ("raysys demo: summary", "steps", "loss (step 2 -> 6)", "binary", "continuous",
                 "loev", "samples/s", "data-wait", "trained", "random-init",
                 "NCC accuracy (fused, test)", "CDNV", "few-shot", "R@1 audio->image",
                 "nDCG@10", str(run / "metrics.jsonl"), str(run / "tensorboard"),
                 summary["checkpoint"], str(run / "model"), str(out / "inspect" / "summary.json"),
                 str(run / "eval" / "report.md"),
                 str(out / "inspect" / "quarantine.parquet")):
        assert text in printed, text
