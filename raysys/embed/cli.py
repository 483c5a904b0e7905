"""Argparse wiring of `raysys embed` (hooked into raysys/cli.py with `add_embed_parser`).

    raysys embed --checkpoint RUN/model --archive ARCHIVE --output OUT [--views audio,image]
                 [--address ADDR] [key=value ...]
    raysys embed --verify OUT --archive ARCHIVE
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from raysys.config import ConfigError
from raysys.embed.config import EmbedError, EmbedIncomplete, load_embed_config
from raysys.errors import UserError


def add_embed_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `raysys embed` and `jobs/embed.py` (one definition for both)."""
    p.add_argument("--checkpoint", help="model export: RUN/ or RUN/model/ (local or s3://)")
    p.add_argument("--archive", required=True, help="archive folder or s3:// prefix")
    p.add_argument("--output", help="output folder or s3:// prefix (parquet shards)")
    p.add_argument("--views", help="comma-separated views to embed (default: every view the "
                                   "model and the archive share)")
    p.add_argument("--verify", metavar="OUT", help="check an output for completeness and "
                                                   "uniqueness instead of embedding")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else local)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="embed settings, e.g. actors=2 dtype=float16 audio.keep_windows=true")


def cmd_embed(args: argparse.Namespace) -> int:
    """Run `raysys embed` (or `--verify`).

    Exit 0 ok, 1 verify failed, 2 bad arguments or a checkpoint/archive/output that can't be
    used (nothing was embedded), 3 the run ended incomplete (rerun to finish)."""
    from raysys.embed.job import run_embed
    from raysys.embed.verify import verify_output

    try:
        if args.verify:
            report = verify_output(args.verify, args.archive)
            _print(report)
            return 0 if report["ok"] else 1
        if not args.checkpoint or not args.output:
            raise ConfigError("raysys embed needs --checkpoint and --output (or --verify OUT)")
        overrides = list(args.overrides)
        if args.views:
            overrides.append(f"views=[{args.views}]")
        cfg = load_embed_config(overrides)
        _print(run_embed(args.checkpoint, args.archive, args.output, cfg, address=args.address))
        return 0
    except (UserError, EmbedError) as e:  # config, archive tables, ... : one message
        print(f"raysys embed: {e}", file=sys.stderr)
        return 3 if isinstance(e, EmbedIncomplete) else 2


def _print(payload: dict[str, Any]) -> None:
    print(json.dumps(payload, indent=1, default=str))


def add_embed_parser(subparsers: Any) -> argparse.ArgumentParser:
    """`raysys embed`: register the subcommand on the CLI's subparsers."""
    p = subparsers.add_parser("embed", help="embed an archive with a model export (resumable)")
    add_embed_args(p)
    p.set_defaults(func=cmd_embed)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raysys embed", description=__doc__.splitlines()[0])
    add_embed_args(parser)
    return cmd_embed(parser.parse_args(argv))
