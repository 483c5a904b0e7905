"""`evaluate_embeddings`: JSON-able, consistent with the individual metrics, random control
near chance, optional subspace and retrieval sections, and a config that names bad keys."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pydantic
import pytest
import torch

from raysys.eval import (
    EvalConfig,
    cdnv,
    evaluate_embeddings,
    knn_accuracy,
    linear_probe,
    ncc_accuracy,
    ndcg_at_k,
    recall_at_k,
    split_indices,
)

SMALL = EvalConfig(few_shot_episodes=40, few_shot_shots=[1, 5], few_shot_queries=5, knn_k=5)


def _hierarchical(seed: int = 0):
    """8 fine classes (30 samples each) nested in 4 coarse classes."""
    rng = np.random.default_rng(seed)
    fine = np.repeat(np.arange(8), 30)
    coarse = fine // 2
    x = (3 * rng.normal(size=(4, 16))[coarse] + 1.5 * rng.normal(size=(8, 16))[fine]
         + rng.normal(size=(fine.size, 16)))
    return x, fine, coarse


def test_report_is_strict_json_and_matches_the_metrics():
    x, fine, coarse = _hierarchical()
    report = evaluate_embeddings(x, {"fine": fine, "coarse": coarse}, config=SMALL)
    json.dumps(report, allow_nan=False)
    tr, te = split_indices(fine, test_fraction=SMALL.test_fraction, seed=SMALL.seed)
    assert report["split"] == {"train": tr.size, "test": te.size, "by": "fine"}
    got = report["labels"]["fine"]
    assert got["classes"] == 8 and got["majority"] == pytest.approx(1 / 8)
    assert got["ncc_test"] == ncc_accuracy(x[tr], fine[tr], x[te], fine[te])
    assert got["ncc_train"] == ncc_accuracy(x[tr], fine[tr], x[tr], fine[tr])
    assert got["cdnv"] == pytest.approx(cdnv(x, fine))
    assert got["knn"] == knn_accuracy(x[tr], fine[tr], x[te], fine[te], k=5)
    assert got["linear_probe"] == linear_probe(x[tr], fine[tr], x[te], fine[te])
    assert set(got["few_shot"]) == {"5way_1shot_prototype", "5way_5shot_prototype"}
    assert got["few_shot"]["5way_5shot_prototype"]["mean"] > 0.5
    assert report["labels"]["coarse"]["classes"] == 4


def test_random_control_is_near_chance_while_semantic_labels_cluster():
    x, fine, coarse = _hierarchical(seed=1)
    report = evaluate_embeddings(x, {"fine": fine, "coarse": coarse}, config=SMALL)
    for name, chance in (("fine", 1 / 8), ("coarse", 1 / 4)):
        real, rand = report["labels"][name], report["labels"][f"{name}/random"]
        assert real["ncc_test"] > 0.8
        assert rand["ncc_test"] < chance + 0.15
        assert rand["cdnv"] > 3 * real["cdnv"]
    off = evaluate_embeddings(x, {"fine": fine}, config=SMALL.model_copy(
        update={"random_control": False}))
    assert list(off["labels"]) == ["fine"]


def test_train_mask_torch_input_and_skipped_few_shot():
    x, fine, _ = _hierarchical(seed=2)
    mask = np.arange(fine.size) % 3 != 0
    cfg = SMALL.model_copy(update={"few_shot_shots": [1, 40]})
    report = evaluate_embeddings(torch.tensor(x, dtype=torch.float32), {"fine": fine},
                                 train_mask=mask, config=cfg)
    assert report["split"] == {"train": int(mask.sum()), "test": int((~mask).sum()),
                               "by": "train_mask"}
    x32 = torch.tensor(x, dtype=torch.float32).numpy()
    assert report["labels"]["fine"]["ncc_test"] == ncc_accuracy(
        x32[mask], fine[mask], x32[~mask], fine[~mask])
    skipped = report["labels"]["fine"]["few_shot"]["5way_40shot_prototype"]
    assert "0 classes have >= shots+queries = 45" in skipped["skipped"]


def test_collapsed_embeddings_report_null_cdnv():
    _, fine, _ = _hierarchical()
    report = evaluate_embeddings(np.ones((fine.size, 4)), {"fine": fine}, config=SMALL)
    assert report["labels"]["fine"]["cdnv"] is None  # inf -> null in strict JSON
    json.dumps(report, allow_nan=False)


def test_subspace_and_retrieval_sections():
    x, fine, coarse = _hierarchical(seed=3)
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(10, 12))
    pos = np.eye(10, 12, dtype=bool)
    rel = rng.integers(0, 101, size=(10, 12)).astype(float)
    report = evaluate_embeddings(
        x, {"fine": fine}, config=SMALL,
        subspaces={"backbone": x, "noise": rng.normal(size=x.shape)},
        factors={"coarse": coarse},
        retrieval={"scores": scores, "positives": pos, "relevance": rel},
    )
    rows = {r["space"]: r for r in report["subspace_probes"]}
    assert rows["backbone"]["probe"] > rows["noise"]["probe"] + 0.3
    ret = report["retrieval"]
    assert set(ret) == {"R@1", "R@5", "R@10", "mAP@10", "nDCG@10"}
    assert ret["R@5"] == recall_at_k(scores, pos, 5)
    assert ret["nDCG@10"] == ndcg_at_k(scores, rel, 10)
    json.dumps(report, allow_nan=False)


def test_config_and_input_errors_name_the_key():
    with pytest.raises(pydantic.ValidationError, match="few_shot_ways"):
        EvalConfig(few_shot_ways=1)
    with pytest.raises(pydantic.ValidationError, match="knn_kk"):
        EvalConfig.model_validate({"knn_kk": 3})
    x, fine, _ = _hierarchical()
    with pytest.raises(ValueError, match=r"labels\['fine'\] has 10 entries"):
        evaluate_embeddings(x, {"fine": fine[:10]}, config=SMALL)
    with pytest.raises(ValueError, match="at least one label set"):
        evaluate_embeddings(x, {}, config=SMALL)


def test_eval_package_does_not_import_ray():
    code = "import sys, raysys.eval; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
