"""R@k, mAP@k and nDCG@k against hand-worked rankings, loop references and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    average_precision_score,
    label_ranking_average_precision_score,
    ndcg_score,
)

from raysys.eval import cosine_scores, map_at_k, ndcg_at_k, recall_at_k


def _random_case(q: int, n: int, seed: int):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(q, n))
    pos = rng.random((q, n)) < 0.3
    pos[np.arange(q), rng.integers(0, n, q)] = True  # every query has a positive
    return scores, pos


def ap_at_k_reference(scores_row, pos_row, k) -> float:
    order = sorted(range(len(scores_row)), key=lambda j: -scores_row[j])
    hits, total = 0, 0.0
    for rank, j in enumerate(order[:k], start=1):
        if pos_row[j]:
            hits += 1
            total += hits / rank
    return total / min(k, int(np.sum(pos_row)))


def test_hand_worked_ranking():
    # Ranking by score: c3, c0, c2, c1, c4; positives c0 and c1 (ranks 2 and 4).
    scores = np.array([[0.8, 0.1, 0.5, 0.9, 0.0]])
    pos = np.array([[1, 1, 0, 0, 0]], bool)
    assert recall_at_k(scores, pos, 1) == 0.0
    assert recall_at_k(scores, pos, 2) == 1.0
    assert recall_at_k(scores, pos, 2, mode="fraction") == 0.5
    assert map_at_k(scores, pos, 10) == pytest.approx((1 / 2 + 2 / 4) / 2)
    assert map_at_k(scores, pos, 3) == pytest.approx((1 / 2) / 2)
    assert map_at_k(scores, pos, 1) == 0.0
    # Graded gains 3 and 1 at ranks 2 and 4; ideal puts them at ranks 1 and 2.
    rel = np.array([[3.0, 1.0, 0, 0, 0]])
    dcg = 3 / np.log2(3) + 1 / np.log2(5)
    idcg = 3 / np.log2(2) + 1 / np.log2(3)
    assert ndcg_at_k(scores, rel, 10) == pytest.approx(dcg / idcg)


def test_map_equals_sklearn_lrap_and_average_precision():
    scores, pos = _random_case(20, 15, seed=0)
    lrap = label_ranking_average_precision_score(pos, scores)
    assert map_at_k(scores, pos, k=15) == pytest.approx(lrap)
    mean_ap = np.mean([average_precision_score(p, s) for p, s in zip(pos, scores, strict=True)])
    assert map_at_k(scores, pos, k=100) == pytest.approx(mean_ap)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_map_and_recall_match_loop_reference(k):
    scores, pos = _random_case(25, 12, seed=k)
    ref = np.mean([ap_at_k_reference(s, p, k) for s, p in zip(scores, pos, strict=True)])
    assert map_at_k(scores, pos, k) == pytest.approx(ref)
    hit_ref, frac_ref = [], []
    for s, p in zip(scores, pos, strict=True):
        top = np.argsort(-s)[:k]
        hit_ref.append(p[top].any())
        frac_ref.append(p[top].sum() / p.sum())
    assert recall_at_k(scores, pos, k) == pytest.approx(np.mean(hit_ref))
    assert recall_at_k(scores, pos, k, mode="fraction") == pytest.approx(np.mean(frac_ref))
    assert recall_at_k(torch.tensor(scores), torch.tensor(pos), k) == pytest.approx(
        np.mean(hit_ref))


def test_perfect_ranking_scores_one_with_more_positives_than_k():
    pos = np.zeros((1, 20), bool)
    pos[0, :15] = True
    scores = np.where(pos, 1.0, 0.0) + np.linspace(0, 0.01, 20)
    assert map_at_k(scores, pos, 10) == 1.0  # denominator min(k, #positives) = 10


def test_ties_are_broken_against_positives():
    scores = np.zeros((2, 5))  # a constant score function
    pos = np.array([[1, 0, 0, 0, 0], [0, 0, 1, 1, 0]], bool)
    assert recall_at_k(scores, pos, 1) == 0.0
    assert recall_at_k(scores, pos, 3) == 0.0
    assert map_at_k(scores, pos, 5) == pytest.approx(np.mean([1 / 5, (1 / 4 + 2 / 5) / 2]))


def test_queries_without_positives_are_left_out():
    scores, pos = _random_case(6, 8, seed=3)
    with_empty = np.vstack([pos, np.zeros((1, 8), bool)])
    with_empty_scores = np.vstack([scores, np.ones((1, 8))])
    assert map_at_k(with_empty_scores, with_empty, 5) == pytest.approx(map_at_k(scores, pos, 5))
    with pytest.raises(ValueError, match="no query has a positive"):
        recall_at_k(scores, np.zeros_like(pos), 1)


def test_mask_equals_dropping_the_padding():
    scores, pos = _random_case(10, 9, seed=4)
    rng = np.random.default_rng(4)
    rel = rng.integers(0, 101, size=scores.shape).astype(float)
    mask = np.ones_like(pos)
    mask[:, 6:] = False  # three padded candidates per query
    padded_scores = np.where(mask, scores, 99.0)  # padding must never rank first
    padded_pos = pos | ~mask
    pos6 = pos[:, :6]
    keep = pos6.any(axis=1)
    assert map_at_k(padded_scores, padded_pos, 4, mask=mask) == pytest.approx(
        map_at_k(scores[keep, :6], pos6[keep], 4))
    assert recall_at_k(padded_scores, padded_pos, 2, mask=mask) == pytest.approx(
        recall_at_k(scores[keep, :6], pos6[keep], 2))
    assert ndcg_at_k(padded_scores, rel, 5, mask=mask) == pytest.approx(
        ndcg_score(rel[:, :6], scores[:, :6], k=5))
    nan_pad = np.where(mask, scores, np.nan)
    assert ndcg_at_k(nan_pad, rel, 5, mask=mask) == pytest.approx(
        ndcg_score(rel[:, :6], scores[:, :6], k=5))


@pytest.mark.parametrize("k", [1, 3, 10, 17])
def test_ndcg_matches_sklearn_with_and_without_ties(k):
    rng = np.random.default_rng(k)
    rel = rng.integers(0, 101, size=(30, 17)).astype(float)
    rel[rng.random(rel.shape) < 0.4] = 0.0
    rel[0] = 0.0  # all-irrelevant query: 0, still counted (sklearn convention)
    continuous = rng.normal(size=rel.shape)
    tied = rng.integers(0, 3, size=rel.shape).astype(float)  # many ties
    assert ndcg_at_k(continuous, rel, k) == pytest.approx(ndcg_score(rel, continuous, k=k))
    assert ndcg_at_k(tied, rel, k) == pytest.approx(ndcg_score(rel, tied, k=k))
    assert ndcg_at_k(rel, rel, k) == pytest.approx(ndcg_score(rel, rel, k=k))


def test_bad_inputs_name_the_problem():
    scores, pos = _random_case(3, 4, seed=5)
    with pytest.raises(ValueError, match="positives has shape"):
        recall_at_k(scores, pos[:, :3], 1)
    bad = scores.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite.*row 2"):
        map_at_k(bad, pos, 2)
    with pytest.raises(ValueError, match=">= 0"):
        ndcg_at_k(scores, -np.ones_like(scores), 2)
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        recall_at_k(scores, pos, 0)


def test_cosine_scores_match_torch():
    rng = np.random.default_rng(6)
    q, g = rng.normal(size=(4, 5)), rng.normal(size=(7, 5))
    expected = torch.nn.functional.cosine_similarity(
        torch.tensor(q)[:, None, :], torch.tensor(g)[None, :, :], dim=-1).numpy()
    np.testing.assert_allclose(cosine_scores(q, g), expected, rtol=1e-12)


def test_retrieval_report_is_each_metric():
    from raysys.eval import retrieval_report

    rng = np.random.default_rng(3)
    scores = rng.normal(size=(10, 12))
    pos = np.eye(10, 12, dtype=bool)
    rel = rng.integers(0, 101, size=(10, 12)).astype(float)
    report = retrieval_report(scores, positives=pos, relevance=rel)
    assert set(report) == {"R@1", "R@5", "R@10", "mAP@10", "nDCG@10"}
    assert report["R@5"] == recall_at_k(scores, pos, 5)
    assert report["mAP@10"] == map_at_k(scores, pos, 10)
    assert report["nDCG@10"] == ndcg_at_k(scores, rel, 10)
    assert set(retrieval_report(scores, relevance=rel, map_k=5)) == {"nDCG@5"}
    with pytest.raises(ValueError, match="needs positives, relevance, or both"):
        retrieval_report(scores)
