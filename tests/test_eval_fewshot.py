"""N-way K-shot episodes: sampling properties, the vectorised prototype head against a loop,
the CI formula, degenerate inputs and speed."""

from __future__ import annotations

import time

import numpy as np
import pytest

from raysys.eval import few_shot, sample_episodes
from raysys.eval.fewshot import prototype_accuracies


def _data(n_classes: int = 8, per_class: int = 25, dim: int = 12, spread: float = 1.0, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), per_class)
    x = rng.normal(size=(n_classes, dim))[y] + spread * rng.normal(size=(y.size, dim))
    return x, y


def test_episode_sampling_properties():
    _, y = _data()
    y = np.append(y, [8] * 7)  # one class of a different size
    ep = sample_episodes(y, ways=5, shots=3, queries=4, episodes=200, seed=1)
    assert ep.classes.shape == (200, 5)
    assert ep.support.shape == (200, 5, 3) and ep.query.shape == (200, 5, 4)
    for e in range(200):
        assert len(set(ep.classes[e].tolist())) == 5
        for w in range(5):
            drawn = np.concatenate([ep.support[e, w], ep.query[e, w]])
            assert len(set(drawn.tolist())) == 7  # distinct, support and query disjoint
            assert (y[drawn] == ep.classes[e, w]).all()
    assert set(ep.classes.ravel().tolist()) == set(range(9))  # every class gets drawn
    members_seen = np.unique(ep.support[ep.classes == 8])
    assert set(members_seen.tolist()) == set(np.flatnonzero(y == 8).tolist())


def test_episodes_are_seeded():
    _, y = _data()
    a = sample_episodes(y, ways=4, shots=2, queries=3, episodes=10, seed=5)
    b = sample_episodes(y, ways=4, shots=2, queries=3, episodes=10, seed=5)
    c = sample_episodes(y, ways=4, shots=2, queries=3, episodes=10, seed=6)
    np.testing.assert_array_equal(a.support, b.support)
    np.testing.assert_array_equal(a.query, b.query)
    assert not np.array_equal(a.support, c.support)


def test_support_position_is_uniform_within_class():
    # Each of a class's 4 members should be in the support (1 shot) about equally often.
    y = np.repeat(np.arange(2), 4)
    ep = sample_episodes(y, ways=2, shots=1, queries=3, episodes=4000, seed=0)
    freq = np.bincount(ep.support.ravel(), minlength=8) / 4000
    np.testing.assert_allclose(freq, 0.25, atol=0.03)


def prototype_loop_reference(x, ep) -> np.ndarray:
    accs = []
    for sup, qry in zip(ep.support, ep.query, strict=True):
        protos = [x[s].mean(axis=0) for s in sup]
        right = total = 0
        for w, q_idx in enumerate(qry):
            for i in q_idx:
                d = [np.sum((x[i] - p) ** 2) for p in protos]
                right += int(np.argmin(d)) == w
                total += 1
        accs.append(right / total)
    return np.array(accs)


def test_prototype_head_matches_loop_and_ci_formula():
    x, y = _data(spread=2.5)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    ep = sample_episodes(y, ways=5, shots=2, queries=5, episodes=50, seed=3)
    ref = prototype_loop_reference(xn, ep)
    np.testing.assert_allclose(prototype_accuracies(xn, ep), ref)
    res = few_shot(x, y, ways=5, shots=2, queries=5, episodes=50, seed=3)
    assert res["mean"] == pytest.approx(ref.mean())
    assert res["ci95"] == pytest.approx(1.96 * ref.std() / np.sqrt(50))
    assert 0.3 < res["mean"] < 1.0


def test_heads_on_separable_and_on_random_data():
    x, y = _data(spread=0.05)
    for head in ("prototype", "logistic"):
        res = few_shot(x, y, ways=5, shots=1, queries=5, episodes=30, seed=0, head=head)
        assert res == {"mean": 1.0, "ci95": 0.0}
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(200, 16))
    chance = few_shot(noise, np.repeat(np.arange(10), 20), ways=5, shots=5, queries=10,
                      episodes=600, seed=0)
    assert abs(chance["mean"] - 0.2) < 3 * chance["ci95"] + 0.01


def test_more_shots_help():
    x, y = _data(spread=2.0)
    one = few_shot(x, y, ways=5, shots=1, queries=10, episodes=300, seed=0)
    ten = few_shot(x, y, ways=5, shots=10, queries=10, episodes=300, seed=0)
    assert ten["mean"] > one["mean"] + 2 * (one["ci95"] + ten["ci95"])


def test_degenerate_inputs_raise_clear_errors():
    x, y = _data(n_classes=6, per_class=10)
    y = y.copy()
    y[:8] = 3  # class 0 keeps 2 samples, class 3 grows
    with pytest.raises(ValueError, match="class 0 has 2 sample.*fewer than shots\\+queries = 6"):
        few_shot(x, y, ways=5, shots=1, queries=5, episodes=5, seed=0)
    res = few_shot(x, y, ways=5, shots=1, queries=5, episodes=5, seed=0, skip_small_classes=True)
    assert 0.0 <= res["mean"] <= 1.0
    with pytest.raises(ValueError, match="only 5 classes .* ways = 6"):
        few_shot(x, y, ways=6, shots=1, queries=5, episodes=5, seed=0, skip_small_classes=True)
    with pytest.raises(ValueError, match="ways must be an integer >= 2"):
        few_shot(x, y, ways=1, shots=1, queries=1, episodes=5, seed=0)
    with pytest.raises(ValueError, match="head"):
        few_shot(x, y, ways=2, shots=1, queries=1, episodes=5, seed=0, head="svm")
    x_nan = x.copy()
    x_nan[4, 0] = np.nan
    with pytest.raises(ValueError, match="emb has 1 non-finite.*row 4"):
        few_shot(x_nan, y, ways=2, shots=1, queries=1, episodes=5, seed=0)


def test_600_prototype_episodes_take_well_under_a_second():
    x, y = _data(n_classes=20, per_class=40, dim=64)
    few_shot(x, y, ways=5, shots=5, queries=15, episodes=20, seed=0)  # warm-up
    start = time.perf_counter()
    few_shot(x, y, ways=5, shots=5, queries=15, episodes=600, seed=0)
    assert time.perf_counter() - start < 0.5
