"""NCC, CDNV, random-label control, kNN and tempo accuracy against hand-worked
examples, naive loop references and scikit-learn."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid

from raysys.eval import cdnv, knn_accuracy, ncc_accuracy, random_labels, tempo_accuracy


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _clustered(n_per: int, n_classes: int, dim: int, spread: float, seed: int):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per)
    return centres[y] + spread * rng.normal(size=(y.size, dim)), y


# ---------------------------------------------------------------- NCC


def ncc_reference(xtr, ytr, xte, yte) -> float:
    xtr, xte = _normalise(xtr), _normalise(xte)
    classes = sorted(set(ytr.tolist()))
    means = {c: np.mean([x for x, y in zip(xtr, ytr, strict=True) if y == c], axis=0)
             for c in classes}
    right = 0
    for x, y in zip(xte, yte, strict=True):
        dists = [np.sum((x - means[c]) ** 2) for c in classes]
        right += classes[int(np.argmin(dists))] == y
    return right / len(yte)


def test_ncc_hand_worked():
    # Normalised train points: class 0 at (1,0) and (0,1) -> mean (.5,.5); class 1 at (-1,0).
    xtr = np.array([[2.0, 0.0], [0.0, 3.0], [-5.0, 0.0]])
    ytr = np.array([0, 0, 1])
    # (0.1, -1) normalised is ~(0.1, -0.995): distance to (.5,.5) ~1.55, to (-1,0) ~1.49 -> 1.
    xte = np.array([[1.0, 1.0], [-1.0, 0.2], [0.1, -1.0]])
    assert ncc_accuracy(xtr, ytr, xte, np.array([0, 1, 1])) == 1.0
    assert ncc_accuracy(xtr, ytr, xte, np.array([0, 1, 0])) == pytest.approx(2 / 3)


def test_ncc_matches_loop_reference_and_sklearn():
    x, y = _clustered(15, 5, 8, spread=1.5, seed=0)
    xte, yte = _clustered(10, 5, 8, spread=1.5, seed=0)
    ours = ncc_accuracy(x, y, xte[::-1], yte[::-1])
    assert ours == pytest.approx(ncc_reference(x, y, xte[::-1], yte[::-1]))
    sk = NearestCentroid().fit(_normalise(x), y)
    assert ours == pytest.approx(np.mean(sk.predict(_normalise(xte[::-1])) == yte[::-1]))
    assert 0.2 < ours < 1.0  # informative data, not trivially separable


def test_ncc_accepts_torch_and_string_labels():
    x, y = _clustered(6, 3, 4, spread=1.0, seed=1)
    names = np.array(["a", "b", "c"])[y]
    expected = ncc_reference(x, y, x, y)
    assert ncc_accuracy(torch.tensor(x), torch.tensor(y), torch.tensor(x), y) == expected
    assert ncc_accuracy(x, names, x, names) == expected


def test_ncc_errors_name_the_problem():
    x, y = _clustered(4, 3, 4, spread=1.0, seed=2)
    with pytest.raises(ValueError, match="at least 2"):
        ncc_accuracy(x, np.zeros(12, int), x, np.zeros(12, int))
    with pytest.raises(ValueError, match="class 7 .*does not occur in train_labels"):
        ncc_accuracy(x, y, x[:2], np.array([0, 7]))
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="test_emb has 1 non-finite.*row 3"):
        ncc_accuracy(x, y, bad, y)
    with pytest.raises(ValueError, match="train_labels has 5 entries"):
        ncc_accuracy(x, y[:5], x, y)
    with pytest.raises(ValueError, match="dimension"):
        ncc_accuracy(x, y, x[:, :2], y)


# ---------------------------------------------------------------- CDNV


def cdnv_reference(x, y) -> float:
    x = _normalise(x)
    classes = sorted(set(y.tolist()))
    mu = {c: x[y == c].mean(axis=0) for c in classes}
    var = {c: np.mean([np.sum((v - mu[c]) ** 2) for v in x[y == c]]) for c in classes}
    terms = [(var[i] + var[j]) / (2 * np.sum((mu[i] - mu[j]) ** 2))
             for i, j in itertools.combinations(classes, 2)]
    return float(np.mean(terms))


def test_cdnv_hand_worked():
    # Unit vectors at +-theta around (1,0) and around (-1,0):
    # Var = sin^2, ||mu0 - mu1||^2 = 4 cos^2  ->  CDNV = tan^2(theta) / 4 = 1/12 at 30 degrees.
    t = math.radians(30)
    x = np.array([[math.cos(t), math.sin(t)], [math.cos(t), -math.sin(t)],
                  [-math.cos(t), math.sin(t)], [-math.cos(t), -math.sin(t)]]) * 3.0
    assert cdnv(x, np.array([0, 0, 1, 1])) == pytest.approx(1 / 12)


def test_cdnv_matches_loop_reference():
    x, y = _clustered(7, 5, 6, spread=0.8, seed=3)
    assert cdnv(x, y) == pytest.approx(cdnv_reference(x, y), rel=1e-10)
    assert cdnv(torch.tensor(x, dtype=torch.float32), y) == pytest.approx(
        cdnv_reference(x, y), rel=1e-5)


def test_cdnv_lower_for_tighter_clusters():
    tight, y = _clustered(10, 4, 8, spread=0.1, seed=4)
    loose, _ = _clustered(10, 4, 8, spread=2.0, seed=4)
    assert cdnv(tight, y) < cdnv(loose, y)


def test_cdnv_degenerate_inputs():
    x, y = _clustered(3, 3, 4, spread=1.0, seed=5)
    y_single = y.copy()
    y_single[0] = 9  # class 9 has one sample
    with pytest.raises(ValueError, match="class 9 has 1 sample"):
        cdnv(x, y_single)
    assert np.isfinite(cdnv(x, y_single, min_class_size=1))
    with pytest.raises(ValueError, match="at least 2"):
        cdnv(x, np.zeros(9, int))
    collapsed = np.ones((6, 4))  # every class mean coincides
    assert cdnv(collapsed, np.array([0, 0, 1, 1, 2, 2])) == math.inf


# ---------------------------------------------------------------- random-label control


def test_random_labels_permutes_and_drops_ncc_to_chance():
    x, y = _clustered(40, 5, 16, spread=0.5, seed=6)
    r = random_labels(y, seed=1)
    np.testing.assert_array_equal(np.sort(r), np.sort(y))  # same class sizes
    np.testing.assert_array_equal(r, random_labels(y, seed=1))
    assert not np.array_equal(r, random_labels(y, seed=2))
    xte, yte = _clustered(40, 5, 16, spread=0.5, seed=6)
    rte = random_labels(yte, seed=9)
    assert ncc_accuracy(x, y, xte, yte) > 0.95
    assert abs(ncc_accuracy(x, r, xte, rte) - 0.2) < 0.12
    assert cdnv(x, r) > 10 * cdnv(x, y)


# ---------------------------------------------------------------- kNN


@pytest.mark.parametrize("weights", ["uniform", "distance"])
@pytest.mark.parametrize("k", [1, 4, 9])
def test_knn_matches_sklearn(weights, k):
    x, y = _clustered(12, 3, 5, spread=1.5, seed=7)
    xte, yte = _clustered(8, 3, 5, spread=1.5, seed=8)
    sk = KNeighborsClassifier(n_neighbors=k, weights=weights).fit(_normalise(x), y)
    expected = np.mean(sk.predict(_normalise(xte)) == yte)
    assert knn_accuracy(x, y, xte, yte, k=k, weights=weights) == pytest.approx(expected)
    sk_raw = KNeighborsClassifier(n_neighbors=k, weights=weights).fit(x, y)
    assert knn_accuracy(x, y, xte, yte, k=k, weights=weights, normalize=False) == (
        pytest.approx(np.mean(sk_raw.predict(xte) == yte)))


def test_knn_vote_ties_go_to_lower_class():
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    # Query equidistant? no: nearest is class 5, second class 2 -> 1 vote each -> class 2 wins.
    q = np.array([[1.0, 0.2]])
    assert knn_accuracy(x, np.array([5, 2]), q, np.array([2]), k=2) == 1.0
    with pytest.raises(ValueError, match="k = 3 exceeds the 2 available"):
        knn_accuracy(x, np.array([5, 2]), q, np.array([2]), k=3)
    with pytest.raises(ValueError, match="weights"):
        knn_accuracy(x, np.array([5, 2]), q, np.array([2]), k=1, weights="gaussian")
    with pytest.raises(ValueError, match="class 4 that does not occur in train_labels"):
        knn_accuracy(x, np.array([5, 2]), q, np.array([4]), k=1)


# ---------------------------------------------------------------- tempo accuracy


def test_tempo_accuracy_hand_worked():
    true = np.full(7, 120.0)
    pred = np.array([124.0, 125.0, 240.0, 61.0, 355.0, 41.0, 100.0])
    # 124: +3.3% (Acc1); 125: +4.2% (miss); 240 = 2x; 61 ~ 60 = x1/2 (1.7%);
    # 355 ~ 360 = 3x (1.4%); 41 ~ 40 = x1/3 (2.5%); 100: miss.
    res = tempo_accuracy(pred, true)
    assert res == {"acc1": pytest.approx(1 / 7), "acc2": pytest.approx(5 / 7)}
    with pytest.raises(ValueError, match="positive"):
        tempo_accuracy(pred, np.zeros(7))


def test_jsonable_reports_are_strict_json():
    import json

    from raysys.eval import jsonable

    out = jsonable({"a": np.float32(0.5), 1: [np.int64(2), float("inf")], "n": float("nan")})
    assert out == {"a": 0.5, "1": [2, None], "n": None}
    json.dumps(out, allow_nan=False)


def test_eval_package_does_not_import_ray():
    import subprocess
    import sys

    code = "import sys, raysys.eval; assert 'ray' not in sys.modules, 'ray imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
