"""Augmentation sensitivity (raysys.embed.sensitivity) on real sound files: the control does
not move any head, real transforms do, unreadable files are skipped, too few clips is an
error. (The whole path through `raysys evaluate` is tested in test_evaluate.py.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from raysys.data.config import DataConfig
from raysys.embed.sensitivity import CONTROL, SCALE, head_sensitivity, read_clips
from raysys.models.config import ModelConfig
from raysys.models.multimodal import ModelInputs, MultiViewModel

SR = 16000


def tones(tmp_path, n: int = 4) -> list[str]:
    """n 2-second notes with harmonics and an onset every 0.25 s, at different pitches."""
    t = np.arange(2 * SR) / SR
    paths = []
    for i in range(n):
        f0 = 220.0 * 2 ** (i / 5)
        wave = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3))
        wave *= np.exp(-8 * (t % 0.25))  # a decaying note every 0.25 s
        path = tmp_path / f"tone{i}.wav"
        sf.write(path, (0.3 * wave).astype(np.float32), SR)
        paths.append(str(path))
    return paths


def model_and_data() -> tuple[MultiViewModel, DataConfig]:
    data = DataConfig.model_validate({"modalities": ["audio"], "clip_seconds": 0.5,
                                      "audio": {"n_bins": 32}})
    torch.manual_seed(0)
    cfg = ModelConfig(embed_dim=8, proj_hidden=16, loev_heads=["pitch_shift"])
    return MultiViewModel(cfg, ModelInputs(("audio",), 3, audio_bins=32)), data


def test_control_moves_nothing_and_transforms_move_every_head(tmp_path):
    model, data = model_and_data()
    waves = read_clips(pd.Series(tones(tmp_path)), SR, clips=10)
    assert len(waves) == 4
    rows = head_sensitivity(model, data, waves)
    assert list(rows)[0] == SCALE and set(rows[SCALE]) == {"invariant", "pitch_shift"}
    assert all(d < 1e-4 for d in rows[CONTROL].values())
    for name in ("stretch 0.8", "stretch 1.25", "pitch -3", "pitch +3"):
        assert all(d > 1e-4 for d in rows[name].values()), (name, rows[name])
    assert all(0 <= d <= 2 for row in rows.values() for d in row.values())


def test_unreadable_files_are_skipped_and_too_few_clips_is_an_error(tmp_path):
    model, data = model_and_data()
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    good = tones(tmp_path, n=1)
    waves = read_clips(pd.Series([str(bad), None, "", *good]), SR, clips=5)
    assert len(waves) == 1
    with pytest.raises(ValueError, match="1 readable audio clip"):
        head_sensitivity(model, data, waves)
