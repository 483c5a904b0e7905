"""Subspace probes and neighbour agreement (the LOEV / LOEV++ checks) on synthetic spaces
where the answer is known, plus loop references for agreement and its chance level."""

from __future__ import annotations

import numpy as np
import pytest

from raysys.eval import neighbour_agreement, neighbour_agreement_chance, subspace_probes


def agreement_reference(x, f, k, rel_tol=None) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    fractions = []
    for i in range(len(x)):
        d = [(np.sum((x[i] - x[j]) ** 2), j) for j in range(len(x)) if j != i]
        neigh = [j for _, j in sorted(d)[:k]]
        same = [(f[j] == f[i]) if rel_tol is None else abs(f[j] - f[i]) <= rel_tol * abs(f[i])
                for j in neigh]
        fractions.append(np.mean(same))
    return float(np.mean(fractions))


def chance_reference(f, rel_tol=None) -> float:
    n = len(f)
    agree = [(f[j] == f[i]) if rel_tol is None else abs(f[j] - f[i]) <= rel_tol * abs(f[i])
             for i in range(n) for j in range(n) if i != j]
    return float(np.mean(agree))


def test_neighbour_agreement_matches_loop_reference():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    cls = rng.integers(0, 4, 60)
    bpm = rng.uniform(80, 160, 60)
    assert neighbour_agreement(x, cls, k=5) == pytest.approx(agreement_reference(x, cls, 5))
    assert neighbour_agreement(x, bpm, k=7, rel_tol=0.04) == pytest.approx(
        agreement_reference(x, bpm, 7, 0.04))
    assert neighbour_agreement_chance(cls) == pytest.approx(chance_reference(cls))
    assert neighbour_agreement_chance(bpm, rel_tol=0.04) == pytest.approx(
        chance_reference(bpm, 0.04))
    with pytest.raises(ValueError, match="k = 60 exceeds the 59 available"):
        neighbour_agreement(x, cls, k=60)


def _loev_spaces(n: int = 240, seed: int = 0):
    """A backbone-like invariant space (neither factor), a pitch head (pitch only) and a time
    branch whose direction on a half circle encodes log-tempo."""
    rng = np.random.default_rng(seed)
    pitch = rng.integers(0, 12, n)
    bpm = rng.uniform(70, 180, n)
    theta = np.pi * (np.log2(bpm) - np.log2(70)) / (np.log2(180) - np.log2(70))
    spaces = {
        "invariant": rng.normal(size=(n, 8)),
        "pitch_head": 3 * np.eye(12)[pitch] + 0.3 * rng.normal(size=(n, 12)),
        "time_branch": np.c_[np.cos(theta), np.sin(theta), 0.01 * rng.normal(size=(n, 4))],
    }
    return spaces, {"pitch": pitch, "tempo": bpm}


def test_subspace_probes_find_each_factor_in_its_space():
    spaces, factors = _loev_spaces()
    rows = subspace_probes(spaces, factors, factor_kinds={"tempo": "tempo"}, k=5, seed=0)
    table = {(r["space"], r["factor"]): r for r in rows}
    assert len(rows) == 6
    pitch_inv, pitch_head = table["invariant", "pitch"], table["pitch_head", "pitch"]
    assert pitch_head["metric"] == "accuracy" and pitch_head["value"]["mean"] > 0.95
    assert pitch_inv["value"]["mean"] < pitch_inv["chance"] + 0.15
    assert pitch_head["agreement"] > 0.9 > 0.3 > pitch_inv["agreement"]
    assert pitch_head["agreement_chance"] == pytest.approx(neighbour_agreement_chance(
        factors["pitch"]))
    tempo_inv, tempo_time = table["invariant", "tempo"], table["time_branch", "tempo"]
    assert tempo_time["kind"] == "tempo" and tempo_time["metric"] == "R2"
    assert tempo_time["value"]["mean"] > 0.8 and tempo_inv["value"]["mean"] < 0.2
    assert tempo_time["acc1"]["mean"] > tempo_inv["acc1"]["mean"]
    assert len(tempo_time["alpha"]) == 5  # one ridge strength per fold
    # LOEV++: neighbours in the time branch share tempo (within 4%) far above chance.
    assert tempo_time["agreement"] > 0.7 > 0.2 > tempo_inv["agreement"]
    assert tempo_time["agreement"] == pytest.approx(
        neighbour_agreement(spaces["time_branch"], factors["tempo"], k=5, rel_tol=0.04))
    assert tempo_time["agreement_chance"] == pytest.approx(
        neighbour_agreement_chance(factors["tempo"], rel_tol=0.04))


def test_float_factors_default_to_continuous_ridge_and_tempo_by_name():
    """The kinds `raysys evaluate` discovers from manifest columns (protocol.factor_kind)."""
    spaces, factors = _loev_spaces(n=120)
    rows = subspace_probes({"time_branch": spaces["time_branch"]}, {"speed": factors["tempo"]})
    assert rows[0]["kind"] == "continuous" and rows[0]["acc1"] is None
    assert rows[0]["value"]["mean"] > 0.8 and np.isfinite(rows[0]["agreement"])
    (row,) = subspace_probes({"time_branch": spaces["time_branch"]}, {"tempo": factors["tempo"]})
    assert row["kind"] == "tempo" and row["acc1"] is not None
    with pytest.raises(ValueError, match="contains NaN"):  # say so, do not drop silently
        subspace_probes(spaces, {"tempo": np.r_[np.nan, factors["tempo"][1:]]})


def test_subspace_probe_errors_and_skips():
    spaces, factors = _loev_spaces(n=60)
    with pytest.raises(ValueError, match="space 'short' has 30 rows, expected 60"):
        subspace_probes({**spaces, "short": spaces["invariant"][:30]}, factors)
    with pytest.raises(ValueError, match="not given"):
        subspace_probes(spaces, factors, factor_kinds={"key": "categorical"})
    with pytest.raises(ValueError, match=r"factors\['pitch'\] has 59 entries"):
        subspace_probes(spaces, {"pitch": factors["pitch"][:59]})
    (row,) = subspace_probes({"invariant": spaces["invariant"]}, {"one": np.zeros(60, int)})
    assert "class" in row["skipped"]  # a single class: the reason, no agreement


def test_categorical_agreement_counts_the_rows_the_probe_uses():
    """A class seen once can neither be probed nor agree with a neighbour: it is left out of
    the agreement and its chance level as it is out of the probe."""
    spaces, factors = _loev_spaces(n=60)
    pitch = factors["pitch"].copy()
    pitch[:3] = [100, 101, 102]  # three singleton classes
    (row,) = subspace_probes({"pitch_head": spaces["pitch_head"]}, {"pitch": pitch}, k=5)
    keep = np.arange(60) >= 3
    x, f = spaces["pitch_head"][keep], pitch[keep]
    assert row["value"]["mean"] > 0.9
    assert row["agreement"] == pytest.approx(agreement_reference(x, f, 5))
    assert row["agreement_chance"] == pytest.approx(chance_reference(f))
