"""How far each audio head moves when a clip is transformed by the training's own augmentations.

`raysys evaluate` asks this of every model with an audio encoder (`eval.sensitivity_clips`):
the centre `clip_seconds` of the first N readable audio files, as they are and transformed by
raysys.data.augment's functions:
- a phase vocoder at rate 1, a control: it should change nothing;
- time stretch by 0.8 and 1.25;
- pitch shift by -3 and +3 semitones.
Per head, it reports the mean cosine distance between a clip and its transformed self, and the
mean distance between different clips (the scale). A LOEV head for augmentation k works when
k moves it further than it moves the invariant head. The invariant head should hardly move at
all (docs/learning.md, session 9). No Ray.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch

from raysys.data.augment import apply_pitch_shift, fix_length, stretch_to
from raysys.data.config import DataConfig
from raysys.data.decode import DecodeError, load_audio
from raysys.data.features import AudioFeaturizer
from raysys.embed.spaces import BACKBONE, encode_views
from raysys.models.multimodal import MultiViewModel

SCALE = "other clips"
CONTROL = "vocoder at rate 1"
Transform = Callable[[np.ndarray], torch.Tensor]


def centre(wave: np.ndarray, length: int) -> torch.Tensor:
    """The centre `length` samples of `wave` (zero-padded when shorter)."""
    return fix_length(torch.as_tensor(wave, dtype=torch.float32), length)


def transforms(length: int) -> dict[str, Transform]:
    """Name -> clip transform producing `length` samples (module docstring): the training's
    own stretch and shift, at fixed amounts."""
    def stretch(rate: float) -> Transform:
        return lambda w: stretch_to(torch.as_tensor(w, dtype=torch.float32), rate, length)

    def shift(semitones: float) -> Transform:
        return lambda w: apply_pitch_shift(centre(w, length), semitones)[0]

    return {CONTROL: stretch(1.0), "stretch 0.8": stretch(0.8), "stretch 1.25": stretch(1.25),
            "pitch -3": shift(-3.0), "pitch +3": shift(3.0)}


def read_clips(uris: pd.Series, sample_rate: int, clips: int) -> list[np.ndarray]:
    """Up to `clips` decoded audio files in order; unreadable ones are skipped (the main
    evaluation reports them)."""
    waves = []
    for uri in uris:
        if len(waves) == clips:
            break
        if not isinstance(uri, str) or not uri:
            continue
        try:
            waves.append(load_audio(uri, sample_rate=sample_rate)[0])
        except DecodeError:
            continue
    return waves


@torch.no_grad()
def _heads(model: MultiViewModel, featurize: AudioFeaturizer,
           waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    x = torch.stack([featurize(w) for w in waves])[:, None]  # [N, 1 view, C, F, T]
    return {h: e for h, e in encode_views(model, "audio", x).items() if h != BACKBONE}


def head_sensitivity(model: MultiViewModel, data: DataConfig,
                     waves: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """`{row: {head: mean cosine distance}}`, rows: SCALE, then each transform. Needs >= 2
    clips."""
    if len(waves) < 2:
        raise ValueError(f"{len(waves)} readable audio clip(s): need at least 2")
    featurize = AudioFeaturizer(data)
    length = featurize.clip_samples
    model = model.eval()
    ref = _heads(model, featurize, [centre(w, length) for w in waves])
    n = len(waves)
    # 1 - cos >= 0 up to float error: clamped, so that an unmoved head reads 0.000, not -0.000
    out = {SCALE: {h: float((1 - e @ e.T).clamp(min=0).sum() / (n * (n - 1)))
                   for h, e in ref.items()}}
    for name, transform in transforms(length).items():
        moved = _heads(model, featurize, [transform(w) for w in waves])
        out[name] = {h: float((1 - (ref[h] * moved[h]).sum(-1)).clamp(min=0).mean())
                     for h in ref}
    return out
