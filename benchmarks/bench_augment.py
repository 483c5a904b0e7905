"""Audio view building (decode workers' CPU): raysys's phase vocoder and EQ vs torchaudio's.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_augment.py                # demo archive
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_augment.py --archive MUSIC \
        --config configs/recipe.yaml --entities 200 --rounds 3

Builds the audio views of `--entities` entities (`ViewBuilder.build` given the waveform
only: what a decode task does per row after reading the file; files are decoded once
beforehand, outside the timing) with the config's augmentations, one torch thread. Arms,
alternated within each round so that a noisy machine hits both alike: `raysys`
(raysys.data.augment as shipped) and `torchaudio` (the same code with
`torchaudio.functional.phase_vocoder` and the EQ's frequency axis recomputed per call, as
before session 30). Reports views/s per arm and the ratio, and checks that both arms built
bit-equal views (same seeds, same epochs).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "1")


def reference_arm() -> Callable[[], None]:
    """Patch raysys.data.augment back to torchaudio's phase vocoder and a per-call EQ axis;
    returns the undo."""
    import torchaudio.functional as AF

    from raysys.data import augment as A

    shipped = A.phase_vocoder, A._eq_axis
    A.phase_vocoder, A._eq_axis = AF.phase_vocoder, A._eq_axis.__wrapped__

    def undo() -> None:
        A.phase_vocoder, A._eq_axis = shipped

    return undo


def build_all(builder, waves: list[tuple[str, int, np.ndarray]], epoch: int) -> tuple[float, list]:
    started = time.perf_counter()
    rows = [builder.build(key, eid, waveform=w, epoch=epoch) for key, eid, w in waves]
    return time.perf_counter() - started, [r["audio"] for r in rows]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--set", nargs="*", default=[], help="dotted overrides")
    p.add_argument("--archive", help="existing archive (default: build a demo archive)")
    p.add_argument("--entities", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="benchmarks/results/augment.json")
    args = p.parse_args()

    import torch

    from raysys.config import load_config
    from raysys.data.decode import load_audio
    from raysys.data.pipeline import open_archive
    from raysys.data.views import ViewBuilder

    torch.set_num_threads(1)
    archive = args.archive
    if archive is None:
        from raysys.data.demo import make_demo_archive

        archive = str(Path(tempfile.mkdtemp(prefix="raysys-augment-")) / "archive")
        make_demo_archive(archive, entities=args.entities, seed=0)
    cfg = load_config(args.config, [f"archive={archive}", *args.set])
    pipe = open_archive(archive, cfg.data)
    frame = pipe.entities.select("all").frame
    frame = frame[frame["audio"].notna()].head(args.entities)
    waves = [(row.key, i, load_audio(row.audio, sample_rate=cfg.data.sample_rate)[0])
             for i, row in enumerate(frame.itertuples(index=False))]
    builder = ViewBuilder(cfg.data, pipe.stats)
    views = len(waves) * cfg.data.views_per_modality
    seconds: dict[str, list[float]] = {"raysys": [], "torchaudio": []}
    for r in range(args.rounds):
        order = ["raysys", "torchaudio"] if r % 2 == 0 else ["torchaudio", "raysys"]
        built = {}
        for arm in order:
            undo = reference_arm() if arm == "torchaudio" else (lambda: None)
            try:
                took, built[arm] = build_all(builder, waves, epoch=r)
            finally:
                undo()
            seconds[arm].append(took)
            print(f"round {r} {arm:10s} {views / took:7.1f} views/s ({took:.2f} s)", flush=True)
        equal = all(np.array_equal(a, b) for a, b in zip(built["raysys"], built["torchaudio"],
                                                          strict=True))
        if not equal:
            raise SystemExit(f"round {r}: the arms built different views")
    rate = {arm: views / float(np.median(s)) for arm, s in seconds.items()}
    result = {"archive": archive, "config": args.config, "overrides": args.set,
              "entities": len(waves), "views_per_round": views, "rounds": args.rounds,
              "seconds": seconds, "views_per_s": rate,
              "ratio_raysys_over_torchaudio": rate["raysys"] / rate["torchaudio"],
              "bit_equal": True}
    print(f"views/s (median of rounds): raysys {rate['raysys']:.1f}, torchaudio "
          f"{rate['torchaudio']:.1f}; ratio {result['ratio_raysys_over_torchaudio']:.2f}; "
          "rows bit-equal")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
