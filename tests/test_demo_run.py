"""`raysys demo` end to end (small), and the graded-relevance metric of its report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysys.eval.measure import graded_relevance

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
                 "run/model/model.json", "run/summary.json", "run/eval/eval.json",
                 "run/eval/report.md", "run/eval/projection.png"):
        assert (out / path).exists(), path
    assert any((run / "tensorboard").iterdir())
    summary = json.loads((run / "summary.json").read_text())
    assert Path(summary["checkpoint"]).name == "step_00000006"
    assert 0 < summary["seconds"] < 900  # the training's own wall time

    report = json.loads((run / "eval" / "eval.json").read_text())
    meta = json.loads((run / "model" / "model.json").read_text())
    assert report["model_id"] == meta["model_id"] and report["step"] == 6
    assert report["entities"] == 32  # k-fold over the whole archive
    for side in ("trained", "random_init", "classic"):
        spaces = report["models"][side]["spaces"]
        assert {"fused", "audio", "image", "tabular"} <= set(spaces)
        logistic = spaces["fused"]["labels"]["label"]["logistic"]
        assert 0.0 <= logistic["mean"] <= 1.0 and logistic["ci95"] > 0
    trained, base = report["models"]["trained"], report["models"]["random_init"]
    assert isinstance(trained["retrieval"]["cross_modal"]["audio->image"]["R@1"], float)
    # trained and random-init embeddings differ (the export is not the initial model)
    assert trained["retrieval"]["cross_modal"] != base["retrieval"]["cross_modal"]

    for text in ("raysys demo: summary", "steps", "loss (step 2 -> 6)", "binary", "continuous",
                 "loev", "samples/s", "data-wait", "trained", "random-init", "classic",
                 "5-fold over all 32 entities", "label logistic (fused)",
                 "coarse logistic (audio)", "few-shot K=1", "R@1 audio->image",
                 "nDCG@10", str(run / "metrics.jsonl"), str(run / "tensorboard"),
                 summary["checkpoint"], str(run / "model"), str(out / "inspect" / "summary.json"),
                 str(run / "eval" / "report.md"),
                 str(out / "inspect" / "quarantine.parquet")):
        assert text in printed, text


def test_relevance_ndcg_follows_the_ratings():
    x = np.eye(4)[[0, 0, 1, 2]] + 0.01 * np.arange(4)[:, None]
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    keys = ["a", "b", "c", "d"]
    ratings = pd.DataFrame({"query": ["a"] * 3, "candidate": ["b", "c", "d"],
                            "relevance": [90.0, 20.0, 5.0]})
    out = graded_relevance(x, np.ones(4, bool), keys, ratings)
    assert out["nDCG@10"] > 0.95 and out["queries"] == 1 and out["ratings"] == 3
    reversed_ratings = ratings.assign(relevance=[5.0, 20.0, 90.0])
    assert graded_relevance(x, np.ones(4, bool), keys, reversed_ratings)["nDCG@10"] < 0.9
