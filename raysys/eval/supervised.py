"""The few-shot baseline a user asks about first: train the same network from scratch on the K
labelled examples of each episode (no pretraining), then classify the episode's queries.

Episodes are drawn as the prototype few-shot curve draws them (raysys.eval.fewshot, W-way,
K shots, the same queries per class). Per episode: a fresh copy of the encoder (its own
random initialisation) with a linear layer on its output is trained with cross-entropy on
every window of the support entities, no augmentation: `epochs` passes over the support
windows in mini-batches of `batch`, and at least `min_steps` Adam steps (K = 1 has only a few
windows); a query entity's prediction is the argmax of its windows' mean logits.
Reported per K: the mean accuracy over episodes and `1.96 * std / sqrt(episodes)`, as the
prototype curve. It trains a network per episode (seconds each on a CPU, more as K grows),
so it runs only when `eval.supervised_episodes` > 0 (tens of episodes, not the prototype's
600).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from raysys.eval.fewshot import sample_episodes

NetFactory = Callable[[int], nn.Module]  # ways -> a fresh classifier of windows


def train_episode(net: nn.Module, windows: list[torch.Tensor], support: np.ndarray,
                  queries: np.ndarray, *, epochs: int, min_steps: int, batch: int, lr: float,
                  generator: torch.Generator) -> float:
    """Fit `net` on the support entities' windows (`support [W, K]` entity indices, way w is
    class w), then the accuracy on `queries [W, Q]`."""
    x = torch.cat([windows[i] for row in support for i in row])
    y = torch.cat([torch.full((len(windows[i]),), w) for w, row in enumerate(support)
                   for i in row])
    steps = max(min_steps, math.ceil(epochs * len(x) / batch))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(steps):
        pick = torch.randint(len(x), (min(batch, len(x)),), generator=generator)
        loss = nn.functional.cross_entropy(net(x[pick]), y[pick])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        right = [int(net(windows[i]).mean(0).argmax()) == w
                 for w, row in enumerate(queries) for i in row]
    return float(np.mean(right))


def supervised_few_shot(make_net: NetFactory, windows: Sequence[torch.Tensor | None],
                        labels: np.ndarray, *, shots: Sequence[int], ways: int, queries: int,
                        episodes: int, seed: int, epochs: int = 10, min_steps: int = 50,
                        batch: int = 32, lr: float = 1e-3) -> dict[str, Any]:
    """`{ways, chance, epochs, min_steps, by_k: {K: {mean, ci95, episodes, queries} |
    {skipped}}}` over the entities that have windows and a label (`windows[i]`: `[n_i, ...]`
    or None)."""
    keep = np.array([w is not None and len(w) > 0 for w in windows]) & np.asarray(
        [label is not None and label == label for label in labels])
    rows = np.flatnonzero(keep)
    y = np.asarray(labels, dtype=object)[rows]
    counts = np.sort(np.unique(y.astype(str), return_counts=True)[1])[::-1]
    ways = int(min(ways, counts.size))
    kept = [windows[i] for i in rows]
    out: dict[str, Any] = {"ways": ways, "chance": 1.0 / max(ways, 1), "epochs": epochs,
                           "min_steps": min_steps, "by_k": {}}
    for k in shots:
        q = min(queries, int(counts[ways - 1]) - k) if ways >= 2 else 0
        if q < 1:
            out["by_k"][str(k)] = {"skipped": f"fewer than {max(ways, 2)} classes have more "
                                              f"than K={k} samples"}
            continue
        ep = sample_episodes(y.astype(str), ways=ways, shots=k, queries=q, episodes=episodes,
                             seed=seed, skip_small_classes=True)
        accs = []
        for e in range(episodes):
            torch.manual_seed(seed * 100_003 + k * 1009 + e)
            generator = torch.Generator().manual_seed(seed + e)
            accs.append(train_episode(make_net(ways), kept, ep.support[e], ep.query[e],
                                      epochs=epochs, min_steps=min_steps, batch=batch, lr=lr,
                                      generator=generator))
        accs_arr = np.asarray(accs)
        out["by_k"][str(k)] = {"mean": float(accs_arr.mean()),
                               "ci95": float(1.96 * accs_arr.std() / np.sqrt(len(accs))),
                               "episodes": episodes, "queries": q}
    return out
