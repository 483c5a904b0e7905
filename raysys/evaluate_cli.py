"""Argparse wiring of `raysys evaluate` (the work is in raysys/evaluate.py, imported on use so
that `raysys --help` stays fast), and the overrides it accepts.

`raysys evaluate` reads only `eval.*` (less the in-training `eval.every`/`eval.cpus`) and
`seed` from the config: the data config comes from the export, the entities from `--split`.
Any other override would be silently ignored, so it is refused, naming the key.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

EVAL_FILE, REPORT_FILE = "eval.json", "report.md"
SPLITS = ("all", "train", "eval")
IN_TRAINING_ONLY = ("eval.every", "eval.cpus")


def ineffective_keys(overrides: list[str]) -> list[str]:
    """The dotted keys of `overrides` that `raysys evaluate` does not read."""
    keys = [text.split("=", 1)[0].strip() for text in overrides]
    return [k for k in keys if not (k == "seed" or k.startswith("eval.") or k == "eval")
            or k in IN_TRAINING_ONLY or k.startswith(tuple(f"{p}." for p in IN_TRAINING_ONLY))]


def refuse_ineffective(overrides: list[str]) -> None:
    from raysys.config import ConfigError

    bad = ineffective_keys(overrides)
    if bad:
        raise ConfigError(
            f"{', '.join(bad)}: no effect in `raysys evaluate`, which reads only eval.* and "
            "seed (the data config comes from the checkpoint's export, the entities from "
            "--split; eval.every/eval.cpus are in-training settings)")


def add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="k-fold evaluation of a checkpoint vs its random init "
                                        "and classic features: eval.json + report.md, plots")
    p.add_argument("--checkpoint", required=True, help="run folder RUN or export RUN/model")
    p.add_argument("--archive", required=True, help="archive folder or s3:// prefix")
    p.add_argument("--out", help="output folder (default RUN/eval)")
    p.add_argument("--config", help="YAML config (default: the run's config.yaml)")
    p.add_argument("--split", default="all", choices=SPLITS,
                   help="entities to evaluate: the whole archive (default) or one split")
    p.add_argument("--compare", action="append", default=[], metavar="RUN",
                   help="another run (or export) to evaluate in the same table; repeatable")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="eval.* or seed overrides (others have no effect here and are refused)")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from raysys.config import ConfigError
    from raysys.evaluate import evaluate_checkpoint

    try:
        result = evaluate_checkpoint(args.checkpoint, args.archive, args.out,
                                     config=args.config, overrides=args.overrides,
                                     split=args.split, compare=args.compare)
    except ConfigError:
        raise  # reported by raysys.cli.main
    except (ValueError, FileNotFoundError) as e:  # EvaluateError, label columns, archive
        print(f"raysys evaluate: {e}", file=sys.stderr)
        return 2
    print(f"report: {result.out / REPORT_FILE}")
    return 0
