"""The tempo accuracy conventions (algorithms.md section 4). The probes themselves are the
k-fold ones of `raysys.eval.protocol`, run per space by `raysys.eval.subspace`."""

from __future__ import annotations

import numpy as np

from raysys.eval._checks import ArrayLike, as_targets

TEMPO_TOLERANCE = 0.04
TEMPO_OCTAVE_FACTORS = (1.0, 2.0, 0.5, 3.0, 1.0 / 3.0)


def tempo_accuracy(
    predicted_bpm: ArrayLike, true_bpm: ArrayLike, *, tolerance: float = TEMPO_TOLERANCE
) -> dict[str, float]:
    """Tempo estimation accuracies (Gouyon et al. 2006 conventions).

    Acc1: fraction with `|p - t| <= tolerance * t`. Acc2: the same, also accepting
    `p` within tolerance of `f * t` for `f` in {2, 1/2, 3, 1/3} (octave errors).
    Shapes: `[N]` each; tempos must be positive.
    """
    t = as_targets(true_bpm, len(true_bpm), "true_bpm")
    p = as_targets(predicted_bpm, t.shape[0], "predicted_bpm")
    if np.any(t <= 0):
        raise ValueError(f"true_bpm must be positive, got minimum {t.min()}")
    f = np.asarray(TEMPO_OCTAVE_FACTORS)
    hits = np.abs(p[:, None] - f[None, :] * t[:, None]) <= tolerance * f[None, :] * t[:, None]
    return {"acc1": float(np.mean(hits[:, 0])), "acc2": float(np.mean(hits.any(axis=1)))}
