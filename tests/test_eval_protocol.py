"""The k-fold protocol of `raysys evaluate` against scikit-learn on fixed arrays, label
discovery, and the classic features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_predict
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler

from raysys.eval.classic import audio_features, image_features, log_features, log_vocabulary
from raysys.eval.config import EvaluationConfig
from raysys.eval.measure import FUSED, Spaces, cross_modal, fuse_concat, measure
from raysys.eval.protocol import (
    binomial_ci,
    compare,
    discover_labels,
    kfold_classification,
    kfold_regression,
    labels_per_class_classification,
    resolve_labels,
)


def blobs(seed: int = 0, classes: int = 4, per: int = 15, dim: int = 6, spread: float = 1.5):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), per)
    x = rng.normal(size=(classes, dim))[y] * spread + rng.normal(size=(y.size, dim))
    return x * rng.uniform(0.1, 10, size=dim), y  # mixed scales: z-scoring matters


def test_kfold_classification_equals_scikit_learn_cross_val_predict():
    x, y = blobs()
    got = kfold_classification(x, y, folds=5, seed=3, knn_k=5)
    folds = StratifiedKFold(5, shuffle=True, random_state=3)
    reference = {
        "ncc": make_pipeline(StandardScaler(), NearestCentroid()),
        "logistic": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "knn": make_pipeline(StandardScaler(), Normalizer(), KNeighborsClassifier(5)),
    }
    for name, model in reference.items():
        acc = float(np.mean(cross_val_predict(model, x, y, cv=folds) == y))
        assert got[name]["mean"] == pytest.approx(acc), name
        assert got[name]["ci95"] == pytest.approx(1.96 * np.sqrt(acc * (1 - acc) / y.size))
    assert got["n"] == 60 and got["classes"] == 4 and got["chance"] == 0.25


def test_every_entity_is_predicted_once_and_singletons_are_dropped():
    x, y = blobs(classes=3, per=10)
    y = y.astype(str).astype(object)
    y[0] = "alone"  # a class seen once can be neither trained on nor tested
    got = kfold_classification(x, y, folds=5, seed=0)
    assert got["n"] == 29 and got["dropped"] == 1 and got["classes"] == 3
    with pytest.raises(ValueError, match="1 class"):
        kfold_classification(x[:10], np.zeros(10), folds=5)


def _loo_mse(xs: np.ndarray, ys: np.ndarray, alpha: float) -> float:
    errs = [ys[i] - Ridge(alpha).fit(np.delete(xs, i, 0), np.delete(ys, i)).predict(
        xs[i : i + 1])[0] for i in range(len(ys))]
    return float(np.mean(np.square(errs)))


def _loo_ridge_reference(x: np.ndarray, y: np.ndarray, folds: int, seed: int,
                         alphas: tuple[float, ...]) -> tuple[np.ndarray, list[float]]:
    """Out-of-fold predictions of ridge on training-fold z-scores, each fold's alpha chosen by
    plain leave-one-out over its training folds (one fit per left-out row and alpha)."""
    pred, chosen = np.empty_like(y), []
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(x):
        scaler = StandardScaler().fit(x[train])
        xs, ys = scaler.transform(x[train]), y[train]
        best = min(alphas, key=lambda a: _loo_mse(xs, ys, a))
        chosen.append(best)
        pred[test] = Ridge(best).fit(xs, ys).predict(scaler.transform(x[test]))
    return pred, chosen


def test_kfold_regression_picks_ridge_strength_on_training_folds_and_tempo_accuracy():
    """Against a naive reference (explicit leave-one-out per alpha). On 50 dimensions of which
    5 carry the tempo, a fixed alpha of 1 overfits 48 training rows (R^2 below 0, as on a
    backbone); the chosen strength does not."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 50))
    bpm = 2 ** (6.5 + 0.5 * x[:, :5].mean(1) + 0.15 * rng.normal(size=60))
    alphas = (0.1, 1.0, 10.0, 100.0, 1000.0)
    got = kfold_regression(x, bpm, folds=5, seed=2, tempo=True, alphas=alphas)
    pred, chosen = _loo_ridge_reference(x, np.log2(bpm), 5, 2, alphas)
    assert got["alpha"] == chosen
    r2 = lambda p: 1 - np.sum((np.log2(bpm) - p) ** 2) / np.sum(
        (np.log2(bpm) - np.log2(bpm).mean()) ** 2)
    assert got["r2"]["mean"] == pytest.approx(r2(pred))
    assert got["acc1"]["mean"] == pytest.approx(np.mean(np.abs(2 ** pred - bpm) <= 0.04 * bpm))
    cv = KFold(5, shuffle=True, random_state=2)
    fixed = cross_val_predict(make_pipeline(StandardScaler(), Ridge(1.0)), x, np.log2(bpm), cv=cv)
    assert r2(fixed) < 0 < r2(pred)


def test_labels_per_class_equals_a_naive_reimplementation_of_its_draws():
    x, y = blobs(classes=4, per=15, spread=1.0)
    y = y[:-3]  # class 3 keeps 12 entities: K = 12 leaves it out
    x = x[:-3]
    got = labels_per_class_classification(x, y, budgets=[3, 12], draws=4, seed=7)
    for k, classes in ((3, [0, 1, 2, 3]), (12, [0, 1, 2])):
        rng = np.random.default_rng([7, k])
        accs = {"logistic": [], "ncc": []}
        for _ in range(4):
            labelled = np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False)
                                       for c in classes])
            test = np.array([i for i in range(y.size) if y[i] in classes and i not in labelled])
            for name, clf in (("logistic", LogisticRegression(max_iter=2000)),
                              ("ncc", NearestCentroid())):
                model = make_pipeline(StandardScaler(), clf).fit(x[labelled], y[labelled])
                accs[name].append(np.mean(model.predict(x[test]) == y[test]))
        cell = got["by_k"][str(k)]
        assert cell["classes"] == len(classes) and cell["labelled"] == k * len(classes)
        assert cell["test"] == sum((y == c).sum() for c in classes) - k * len(classes)
        for name, values in accs.items():
            assert cell[name]["mean"] == pytest.approx(np.mean(values))
            half = stats.t.ppf(0.975, 3) * np.std(values, ddof=1) / 2.0
            assert cell[name]["ci95"] == pytest.approx(half)


def test_labels_per_class_tells_signal_from_noise_and_skips_impossible_budgets():
    x, y = blobs(classes=5, per=12, spread=3.0)
    noise = np.random.default_rng(1).normal(size=x.shape)
    signal = labels_per_class_classification(x, y, budgets=[1, 5, 12], draws=5)
    chance = labels_per_class_classification(noise, y, budgets=[1, 5, 12], draws=5)
    for k in ("1", "5"):
        assert signal["by_k"][k]["logistic"]["mean"] > 0.7
        assert chance["by_k"][k]["logistic"]["mean"] < 0.5
    assert "0 class(es) have more than K=12" in signal["by_k"]["12"]["skipped"]


def test_compare_outside_the_ci():
    a, b = {"mean": 0.9, "ci95": 0.02}, {"mean": 0.8, "ci95": 0.03}
    assert compare(a, b) == "better" and compare(b, a) == "worse"
    assert compare(a, {"mean": 0.88, "ci95": 0.02}) == "within CI"
    assert compare(a, {"skipped": "x"}) == "n/a"
    assert binomial_ci(0.5, 100) == pytest.approx(0.098)


def test_labels_are_discovered_from_the_manifest():
    frame = pd.DataFrame({"label_family": ["a", "b"], "label": ["x", "y"],
                          "label_tempo": [120.0, 90.0], "label_key": [0, 5],
                          "label_gain": [0.5, 0.1], "label_bpm_int": [100, 120]})
    sets, kinds = discover_labels(frame)
    assert list(sets) == ["label", "family", "key"]  # `label` first: the main label set
    assert kinds == {"label": "categorical", "family": "categorical", "tempo": "tempo",
                     "key": "categorical", "gain": "continuous", "bpm_int": "tempo"}
    sets, factors, kinds = resolve_labels({"inst": "label"}, None, {"key": "continuous"}, frame)
    assert sets == {"inst": "label"} and factors["tempo"] == "label_tempo"
    assert kinds["key"] == "continuous" and kinds["tempo"] == "tempo"
    with pytest.raises(ValueError, match=r"eval\.label_sets\.genre: column 'label_genre' is not"):
        resolve_labels({"genre": "label_genre"}, None, {}, frame)
    with pytest.raises(ValueError, match=r"eval\.factors\.f: column 'label_f'"):
        resolve_labels(None, {"f": "label_f"}, {}, frame)


def test_measure_separates_signal_from_noise_on_the_same_folds():
    x, y = blobs(classes=5, per=12, spread=3.0)
    noise = np.random.default_rng(9).normal(size=x.shape)
    n = y.size
    z = (x[:, 0] - x[:, 0].mean()) / x[:, 0].std()
    labels = pd.DataFrame({"label": y, "label_tempo": 2 ** (6.8 + 0.3 * z)})  # linear in x
    cfg = EvaluationConfig(few_shot_episodes=50, few_shot_shots=[1, 5, 20])
    out = {}
    for name, e in (("signal", x), ("noise", noise)):
        present = {"audio": np.ones(n, bool), FUSED: np.ones(n, bool)}
        spaces = Spaces(name, {"audio": e, FUSED: e}, present,
                        probe_spaces={"audio": {"backbone": e}})
        out[name] = measure(spaces, labels, [str(i) for i in range(n)], label_sets={"label":
                            "label"}, factors={"tempo": "label_tempo"}, kinds={"tempo": "tempo"},
                            cfg=cfg)
    sig, noi = (out[k]["spaces"][FUSED] for k in ("signal", "noise"))
    assert sig["labels"]["label"]["logistic"]["mean"] > 0.9 > 0.5 > \
        noi["labels"]["label"]["logistic"]["mean"]
    k1 = [d["few_shot"]["label"]["by_k"]["1"]["mean"] for d in (sig, noi)]
    assert k1[0] > k1[1]
    assert "skipped" in sig["few_shot"]["label"]["by_k"]["20"]  # 12 per class
    budget = [d["labels_per_class"]["label"]["by_k"]["5"]["logistic"]["mean"] for d in (sig, noi)]
    assert budget[0] > 0.9 > 0.5 > budget[1]
    assert "skipped" in sig["labels_per_class"]["label"]["by_k"]["20"]
    probe = out["signal"]["probes"][0]
    assert probe["kind"] == "tempo" and probe["value"]["mean"] > 0.8 and "acc1" in probe
    assert out["signal"]["retrieval"]["cross_modal"] == {}  # one modality: no pair


def test_a_space_equal_to_a_measured_one_reuses_it_and_thin_factors_are_skipped():
    x, y = blobs(classes=4, per=10, spread=3.0)
    n = y.size
    melody = np.arange(n) // 2  # 20 classes of 2: too few per class, as the label set says
    labels = pd.DataFrame({"label": y, "label_melody": melody})
    cfg = EvaluationConfig(few_shot_episodes=20, few_shot_shots=[1])
    other = x + 1.0
    spaces = Spaces("m", {"audio": x, "image": other, FUSED: x.copy()},
                    {m: np.ones(n, bool) for m in ("audio", "image", FUSED)},
                    probe_spaces={"audio": {"backbone": x}})
    out = measure(spaces, labels, [str(i) for i in range(n)], label_sets={"label": "label"},
                  factors={"label": "label", "melody": "label_melody"},
                  kinds={"label": "categorical", "melody": "categorical"}, cfg=cfg)
    assert out["spaces"][FUSED] == out["spaces"]["audio"]
    alone = measure(Spaces("m", {FUSED: x}, {FUSED: np.ones(n, bool)}), labels,
                    [str(i) for i in range(n)], label_sets={"label": "label"}, factors={},
                    kinds={}, cfg=cfg)
    assert alone["spaces"][FUSED] == out["spaces"]["audio"]  # the reused result is its own
    assert out["spaces"]["image"]["entities"] == n
    label_row, melody_row = out["probes"]
    assert label_row["value"]["mean"] > 0.9
    assert melody_row["factor"] == "melody" and "too few samples per class" in \
        melody_row["skipped"]


def test_cross_modal_retrieval_ranks_in_the_shared_space_when_given():
    rng = np.random.default_rng(3)
    n = 30
    shared = rng.normal(size=(n, 8))
    own = {m: rng.normal(size=(n, 8)) for m in ("audio", "image")}  # unaligned per modality
    present = {m: np.ones(n, bool) for m in ("audio", "image", FUSED)}
    plain = Spaces("m", {**own, FUSED: shared}, present)
    crossed = Spaces("m", {**own, FUSED: shared}, present,
                     retrieval={"audio": shared, "image": shared + 0.01})
    ks = (1,)
    assert cross_modal(crossed, ks)["audio->image"]["R@1"] == 1.0
    assert cross_modal(plain, ks)["audio->image"]["R@1"] < 0.3


def test_classic_features_carry_what_they_should():
    sr = 16000
    t = np.arange(sr) / sr
    low = audio_features(np.sin(2 * np.pi * 220 * t).astype(np.float32), sr)
    high = audio_features(np.sin(2 * np.pi * 3000 * t).astype(np.float32), sr)
    assert low.shape == (151,) and np.isfinite(low).all() and np.abs(low - high).max() > 1
    rhythm = {}
    for period in (0.25, 0.5):  # clicks every 250 / 500 ms: the autocorrelation peaks there
        clicks = np.zeros(2 * sr, np.float32)
        for start in np.arange(0, 2 * sr - 400, int(period * sr)):
            clicks[start:start + 400] = np.sin(2 * np.pi * 1000 * t[:400])
        rhythm[period] = audio_features(clicks, sr)[120:]  # after the spectral statistics
        lag = 10 + 5 * int(rhythm[period][3:].argmax())  # autocorrelation at 10, 15, ... frames
        assert lag == period * 100
    assert rhythm[0.25][0] > rhythm[0.5][0]  # log onset rate: twice the clicks
    half = audio_features(np.zeros(sr // 2, np.float32), sr)  # shorter than the longest lag
    assert half.shape == (151,) and np.isfinite(half).all()
    red = np.zeros((32, 32, 3), np.uint8)
    red[..., 0] = 255
    feats = image_features(red)
    assert feats.shape == (224,) and feats[0] == pytest.approx(1.0) and feats[1] == 0.0
    logs = pd.DataFrame({"v": [1.0, 3.0, np.nan], "s": ["a", "b", "a"]})
    vocab = log_vocabulary(logs, ["s"])
    f = log_features(logs, ["v"], vocab)
    assert f.tolist() == pytest.approx([2.0, 1.0, 1.0, 3.0, 1 / 3, 3.0, 2 / 3, 1 / 3])
    both = fuse_concat({"a": np.ones((3, 2)) * [[1], [2], [3]], "b": np.ones((3, 1))},
                       {"a": np.ones(3, bool), "b": np.array([True, False, True])})
    assert both[0].shape == (3, 3) and both[1].all()
