"""The supervised-from-scratch few-shot baseline (raysys/eval/supervised.py): a fresh network
per episode, trained on the support windows only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from raysys.eval.supervised import supervised_few_shot


def windows_of(labels: np.ndarray, signal: float, seed: int = 0) -> list[torch.Tensor]:
    """Each entity 1-3 windows of 8 features: its class's direction times `signal`, plus
    unit noise."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(int(labels.max()) + 1, 8, generator=g)
    return [signal * centres[y] + torch.randn(1 + i % 3, 8, generator=g)
            for i, y in enumerate(labels)]


def linear(ways: int) -> nn.Module:
    return nn.Linear(8, ways)


def test_learns_separable_classes_and_stays_at_chance_on_noise():
    labels = np.repeat(np.arange(6), 12)
    kw = dict(shots=[1, 5], ways=5, queries=5, episodes=8, seed=0, min_steps=60, lr=0.05)
    easy = supervised_few_shot(linear, windows_of(labels, 3.0), labels, **kw)
    assert easy["ways"] == 5 and easy["chance"] == 0.2
    assert easy["by_k"]["5"]["mean"] > 0.9 and easy["by_k"]["5"]["episodes"] == 8
    noise = supervised_few_shot(linear, windows_of(labels, 0.0), labels, **kw)
    assert abs(noise["by_k"]["5"]["mean"] - 0.2) < 0.15
    again = supervised_few_shot(linear, windows_of(labels, 3.0), labels, **kw)
    assert again == easy  # seeded: the same episodes, initialisations and batches


def test_entities_without_windows_or_label_are_left_out_and_big_k_is_skipped():
    labels = np.repeat(np.arange(3), 6).astype(object)
    windows: list[torch.Tensor | None] = list(windows_of(np.repeat(np.arange(3), 6), 3.0))
    windows[0], labels[1] = None, None
    got = supervised_few_shot(linear, windows, labels, shots=[1, 20], ways=5, queries=3,
                              episodes=2, seed=1, min_steps=5, epochs=1)
    assert got["ways"] == 3 and got["by_k"]["1"]["queries"] == 3
    assert "skipped" in got["by_k"]["20"]


def test_each_episode_trains_a_fresh_network():
    made: list[nn.Module] = []

    def factory(ways: int) -> nn.Module:
        made.append(nn.Linear(8, ways))
        return made[-1]

    labels = np.repeat(np.arange(5), 4)
    supervised_few_shot(factory, windows_of(labels, 1.0), labels, shots=[1], ways=5,
                        queries=2, episodes=3, seed=0, min_steps=2, epochs=1)
    assert len(made) == 3 and len({id(m) for m in made}) == 3
    assert not torch.equal(made[0].weight, made[1].weight)


def test_zero_episodes_is_refused_by_the_sampler():
    labels = np.repeat(np.arange(5), 4)
    with pytest.raises(ValueError, match="episodes"):
        supervised_few_shot(linear, windows_of(labels, 1.0), labels, shots=[1], ways=5,
                            queries=2, episodes=0, seed=0, min_steps=2)
