"""How visible is a pitch shift's band edge in the audio features? (docs/learning.md, session 22)

A downward pitch shift by s semitones (raysys.data.augment.apply_pitch_shift: phase vocoder,
then resampling) leaves nothing above sr/2 * 2^(s/12). For clips of an archive, print the share
of the original's energy above that edge and, per feature channel, how much lower the top bins
of the shifted view sit than the original's (in the standardised features the encoder sees),
against the bins below.

    .venv/bin/python experiments/shift_band_edge.py ARCHIVE [key=value ...] [--clips 40]
        [--shifts -3 3]      (config overrides before --shifts, which takes every number after it)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def rounded(values: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:+.2f}" for v in values) + "]"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("archive")
    p.add_argument("--clips", type=int, default=40)
    p.add_argument("--shifts", type=float, nargs="+", default=[-3.0, 3.0])
    p.add_argument("--top-bins", type=int, default=8)
    p.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs"
                                           / "recipe.yaml"))
    p.add_argument("overrides", nargs="*", default=[
        "data.audio.channels=[logmel,logstft,pcen,logfreq]"], metavar="key=value")
    args = p.parse_args(argv)
    from raysys.config import load_config
    from raysys.data.augment import apply_pitch_shift
    from raysys.data.features import AudioFeaturizer

    cfg = load_config(args.config, args.overrides)
    featurize = AudioFeaturizer(cfg.data)
    sr, n = cfg.data.sample_rate, featurize.clip_samples
    files = sorted(Path(args.archive).rglob("*.wav"))[:args.clips]
    print(f"{len(files)} clips, first {n / sr:.1f} s of each; channels "
          f"{cfg.data.audio.channels}; top {args.top_bins} of {cfg.data.audio.n_bins} bins")
    for shift in args.shifts:
        edge = sr / 2 * min(1.0, 2.0 ** (shift / 12))
        share, top, rest = [], [], []
        for path in files:
            wave, rate = sf.read(path, dtype="float32", always_2d=True)
            if rate != sr or len(wave) < n:
                continue
            x = torch.from_numpy(wave[:n, 0].copy())
            power = np.abs(np.fft.rfft(x.numpy())) ** 2
            share.append(power[np.fft.rfftfreq(n, 1 / sr) > edge].sum() / power.sum())
            drop = (featurize(x) - featurize(apply_pitch_shift(x, shift)[0])).mean(-1)  # [C, F]
            top.append(drop[:, -args.top_bins:].mean(-1).numpy())
            rest.append(drop[:, :-args.top_bins].mean(-1).numpy())
        print(f"shift {shift:+.1f} semitones (edge {edge:.0f} Hz): original's energy above the "
              f"edge, median {np.median(share):.1e}; original - shifted, mean per channel: "
              f"top bins {rounded(np.mean(top, 0))}, the others {rounded(np.mean(rest, 0))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
