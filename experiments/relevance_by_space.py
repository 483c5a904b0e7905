"""Graded relevance in each modality's own space, for runs evaluated before `raysys evaluate`
reported it (issue 14, goal 2: do the image and log views cost the audio its ranking?).

    python experiments/relevance_by_space.py --archive ARCHIVE --runs SETTING=RUN [RUN ...] \
        [SETTING=RUN ...]

Each RUN is a run folder (its `model/` export); runs of one SETTING are its seeds. The trained
model embeds every entity as `raysys evaluate` does, and `raysys.eval.measure.relevance_by_space`
ranks the held-out queries' rated candidates in the fused space and in each modality's space.
Prints nDCG@10, R@1 and mAP@10 per setting and space, mean ± 95% t-interval over seeds.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from seedstats import as_cell, seed_stats  # noqa: E402

from raysys.config import load_config  # noqa: E402
from raysys.embed.spaces import entity_frame  # noqa: E402
from raysys.eval.measure import FUSED, relevance_by_space  # noqa: E402
from raysys.evaluate import (  # noqa: E402
    embed_models,
    held_out_keys,
    open_eval_archive,
    resolve_checkpoint,
)
from raysys.train.export import load_model  # noqa: E402

MEASURES = ("nDCG@10", "R@1", "mAP@10")


def measure_run(run: str, archive: str) -> dict[str, dict]:
    """space -> graded relevance of one run's trained model."""
    ckpt = resolve_checkpoint(run)
    model, meta = load_model(ckpt.model_dir)
    cfg = load_config(str(ckpt.run_dir / "config.yaml") if ckpt.run_dir else None,
                      [f"archive={archive}"])
    pipe = open_eval_archive(archive, meta)
    if pipe.info.relevance is None:
        raise SystemExit(f"relevance_by_space.py: {archive} has no relevance.parquet to rank")
    frame = entity_frame(pipe, "all")
    keys = frame["key"].tolist()
    spaces = embed_models(pipe, frame, {"trained": (model, meta)}, cfg.eval.batch_size)
    got = relevance_by_space(spaces["trained"], keys, pipe.info.relevance.frame, cfg.eval,
                             held_out_keys(pipe, keys))
    return {FUSED: got["relevance"], **got.get("relevance_by_modality", {})}


def cell(values: list) -> str:
    stats = seed_stats([as_cell(v) for v in values])
    return "–" if stats is None else f"{stats['mean']:.3f} ± {stats['ci95']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", required=True)
    parser.add_argument("--runs", nargs="+", required=True, metavar="SETTING=RUN")
    args = parser.parse_args()
    by_setting: dict[str, list[dict[str, dict]]] = defaultdict(list)
    for item in args.runs:
        setting, _, run = item.partition("=")
        if not run:
            parser.error(f"--runs {item}: expected SETTING=RUN")
        by_setting[setting].append(measure_run(run, args.archive))
    print("\n| setting | space | seeds | " + " | ".join(MEASURES) + " |")
    print("|---" * (3 + len(MEASURES)) + "|")
    for setting, runs in by_setting.items():
        for space in runs[0]:
            values = [[r[space].get(m) for r in runs] for m in MEASURES]
            print(f"| {setting} | {space} | {len(runs)} | "
                  + " | ".join(cell(v) for v in values) + " |")


if __name__ == "__main__":
    main()
