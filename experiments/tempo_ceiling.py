"""How much of an archive's tempo a hand-made rhythm estimator recovers: the bar a learned
tempo space can be read against (goal 3 of issue 14 asks R² >= 0.5 of log tempo).

    python experiments/tempo_ceiling.py W/music [--column label_tempo]

Per audio file: the spectral flux of a 64-band log-mel (10 ms hop), then the log onset rate,
the flux's mean and spread, and its autocorrelation at lags 0.1-1.5 s (every 50 ms). Printed:
the out-of-fold R² of log2 tempo (`raysys.eval.protocol.kfold_regression`: ridge, strength
chosen on the training folds, 5-fold) from the onset rate alone, from all statistics of the
whole clip, and from the same statistics per 1-s window averaged over the clip (what an
encoder of `data.clip_seconds: 1.0` windows sees). No Ray, no model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio

from raysys.data.decode import load_audio
from raysys.eval.classic import FRAMES_PER_SECOND, rhythm_statistics, spectral_flux
from raysys.eval.protocol import kfold_regression

SAMPLE_RATE = 16000


def clip_features(flux: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(whole-clip statistics, 1-s window statistics averaged over the clip)."""
    threshold = flux.mean() + flux.std()
    whole = rhythm_statistics(flux, threshold, 150)
    starts = range(0, max(len(flux) - FRAMES_PER_SECOND, 0) + 1, FRAMES_PER_SECOND)
    windows = [rhythm_statistics(flux[a:a + FRAMES_PER_SECOND], threshold, 95) for a in starts]
    return whole, np.mean(windows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("--column", default="label_tempo", help="tempo column (BPM)")
    args = parser.parse_args()
    manifest = pd.read_parquet(args.archive / "manifest.parquet")
    manifest = manifest[manifest["audio"].notna() & manifest[args.column].notna()]
    mel = torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=1024,
                                               hop_length=SAMPLE_RATE // FRAMES_PER_SECOND,
                                               n_mels=64)
    whole, windowed = [], []
    for i, path in enumerate(manifest["audio"]):
        wave, _ = load_audio(str(args.archive / path), sample_rate=SAMPLE_RATE)
        power = mel(torch.as_tensor(wave, dtype=torch.float32).reshape(-1))
        a, b = clip_features(spectral_flux(power))
        whole.append(a)
        windowed.append(b)
        if (i + 1) % 100 == 0:
            print(f"[tempo_ceiling] {i + 1}/{len(manifest)} clips", flush=True)
    tempo = manifest[args.column].to_numpy(float)
    x_whole, x_windowed = np.array(whole), np.array(windowed)
    for name, x in [("onset rate alone", x_whole[:, :1]), ("whole clip", x_whole),
                    ("1-s windows, averaged", x_windowed)]:
        r2 = kfold_regression(x, tempo, tempo=True)["r2"]
        print(f"{name:24s} R² of log2 tempo {r2['mean']:.3f} ± {r2['ci95']:.3f} "
              f"({len(tempo)} clips)")


if __name__ == "__main__":
    main()
