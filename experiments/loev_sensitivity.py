"""Does each head react to the augmentation it tracks? (issue 14, goal 3)

    python experiments/loev_sensitivity.py --checkpoint RUN --archive ARCHIVE [--clips 150]

For the first `--clips` audio files of the archive: the centre `clip_seconds` of each, as is
and transformed by the training's own augmentation functions (raysys.data.augment): a phase
vocoder at rate 1 (the control: it should change nothing), time stretch at 0.8 and 1.25, pitch
shift by -3 and +3 semitones. Each is embedded by the trained model and its random init.
Prints, per head, the mean cosine distance between a clip and its transformed version, next
to the mean distance between different clips (the scale). A LOEV head for augmentation k
works when it moves further under k than the invariant head does.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.data.augment import apply_pitch_shift, apply_time_stretch, fix_length  # noqa: E402
from raysys.data.decode import load_audio  # noqa: E402
from raysys.data.features import AudioFeaturizer  # noqa: E402
from raysys.embed.plan import Export  # noqa: E402
from raysys.embed.spaces import BACKBONE, _encode, entity_frame  # noqa: E402
from raysys.evaluate import open_eval_archive, resolve_checkpoint  # noqa: E402
from raysys.models.multimodal import MultiViewModel  # noqa: E402
from raysys.train.diagnostics import random_init_model  # noqa: E402
from raysys.train.export import load_model  # noqa: E402

N_FFT, HOP = 512, 128  # the augmentations' phase vocoder (raysys.data.augment defaults)


def centre(wave: np.ndarray, length: int) -> torch.Tensor:
    start = max(0, (len(wave) - length) // 2)
    return fix_length(torch.as_tensor(wave[start:start + length]), length)


def variants(length: int) -> dict[str, Callable[[np.ndarray], torch.Tensor]]:
    def stretch(rate: float) -> Callable[[np.ndarray], torch.Tensor]:
        source = int(length * rate) + N_FFT  # what the stretch shrinks or grows to `length`
        return lambda w: fix_length(apply_time_stretch(centre(w, source), rate, N_FFT, HOP),
                                    length)

    def shift(semitones: float) -> Callable[[np.ndarray], torch.Tensor]:
        return lambda w: apply_pitch_shift(centre(w, length), semitones)[0]

    return {"vocoder at rate 1": stretch(1.0), "stretch 0.8": stretch(0.8),
            "stretch 1.25": stretch(1.25), "pitch -3": shift(-3.0), "pitch +3": shift(3.0)}


@torch.no_grad()
def heads_of(model: MultiViewModel, featurize: AudioFeaturizer,
             waves: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    x = torch.stack([featurize(w) for w in waves])[:, None]
    return {h: e for h, e in _encode(model.eval(), "audio", x).items() if h != BACKBONE}


def report(name: str, model: MultiViewModel, featurize: AudioFeaturizer,
           waves: list[np.ndarray]) -> None:
    length = featurize.clip_samples
    ref = heads_of(model, featurize, [centre(w, length) for w in waves])
    n = len(waves)
    print(f"\n{name}: mean cosine distance to the untransformed clip\n")
    print("| | " + " | ".join(ref) + " |")
    print("|---" * (len(ref) + 1) + "|")
    other = [float((1 - e @ e.T).sum() / (n * (n - 1))) for e in ref.values()]
    print("| other clips (scale) | " + " | ".join(f"{d:.3f}" for d in other) + " |")
    for label, transform in variants(length).items():
        moved = heads_of(model, featurize, [transform(w) for w in waves])
        d = [float((1 - (ref[h] * moved[h]).sum(-1)).mean()) for h in ref]
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in d) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--clips", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0, help="the random init's seed")
    args = parser.parse_args()
    model, meta = load_model(resolve_checkpoint(args.checkpoint).model_dir)
    if "audio" not in model.modalities:
        raise SystemExit(f"{args.checkpoint}: the model has no audio encoder")
    pipe = open_eval_archive(args.archive, meta)
    data = Export(b"", meta).data_config(list(model.modalities))
    featurize = AudioFeaturizer(data)
    uris = [u for u in entity_frame(pipe, "all")["audio"] if isinstance(u, str) and u]
    waves = [load_audio(u, sample_rate=data.sample_rate)[0] for u in uris[:args.clips]]
    report("trained", model, featurize, waves)
    report("random init", random_init_model(meta, args.seed), featurize, waves)


if __name__ == "__main__":
    main()
