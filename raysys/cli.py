"""The `raysys` command line: make-demo-data, make-corpus, data inspect, config show, cluster
check, pretrain, sweep, demo, embed, evaluate.

Every subcommand that takes a config accepts `--config FILE` and trailing `key.path=value`
overrides (values are YAML: `train.steps=50`, `'data.modalities=[audio, image]'`,
`'eval.label_sets={fine: label, coarse: label_family}'`); a wrong key or value fails before
any work starts, naming the key (`raysys config show --explain` lists every key). User errors
(config, archive tables, paths, cluster size) print one message and exit 2.

Modules are imported by the subcommand that needs them, so `raysys --help` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from raysys import __version__

if TYPE_CHECKING:
    from raysys.config import RaysysConfig

DEMO_ENTITIES = 512
CORPORA = ("music", "speech")  # raysys.corpora.BUILDERS (not imported here: it is slow)


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (see configs/)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")


def _config_from(args: argparse.Namespace, extra: Sequence[str] = ()) -> RaysysConfig:
    from raysys.config import load_config

    return load_config(args.config, [*extra, *args.overrides])


def cmd_make_demo_data(args: argparse.Namespace) -> int:
    from raysys.data.demo import make_demo_archive

    info = make_demo_archive(
        args.out, entities=args.entities, seed=args.seed, missing_fraction=args.missing_fraction
    )
    print(f"demo archive written to {args.out}: {info}")
    return 0


def cmd_make_corpus(args: argparse.Namespace) -> int:
    from raysys.corpora import CorpusUnavailable, make_corpus

    try:
        info = make_corpus(args.name, args.out, entities=args.entities, seed=args.seed,
                           missing_fraction=args.missing_fraction)
    except CorpusUnavailable as e:
        print(f"raysys make-corpus: {e}", file=sys.stderr)
        return 2
    print(f"corpus {args.name!r} written to {info.root} in {info.seconds:.0f} s: "
          f"{info.entities} entities, views {info.views}, labels {info.labels}, "
          f"{info.log_rows} log rows, {info.relevance_rows} ratings")
    return 0


def archive_tables(cfg: RaysysConfig) -> Any:
    """The archive's tables checked before the heavy imports (torch, Ray Train) and before Ray
    starts: a schema error (file, row, column named) comes in about a second."""
    from raysys.data.archive import check_tables

    return check_tables(cfg.archive, allow_outside=cfg.data.allow_outside_paths)


def cmd_data_inspect(args: argparse.Namespace) -> int:
    from raysys.data.inspect import inspect_archive, print_summary
    from raysys.data.pipeline import open_archive
    from raysys.runtime import init_ray

    cfg = _config_from(args, [f"archive={args.archive}"])
    pipe = open_archive(cfg.archive, cfg.data, archive_tables(cfg))
    init_ray()
    summary = inspect_archive(cfg.archive, cfg.data, out_dir=args.out, pipe=pipe)
    print_summary(summary, out_dir=args.out)
    return 0 if summary["ok"] else 3


def cmd_config_show(args: argparse.Namespace) -> int:
    from raysys.config import dump_config, explain_config

    cfg = _config_from(args)
    print(explain_config(cfg) if args.explain else dump_config(cfg), end="")
    return 0


def cmd_cluster_check(args: argparse.Namespace) -> int:
    from raysys.cluster_check import check_cluster

    for line in check_cluster(args.cluster_yaml, _config_from(args)):
        print(line)
    print(f"{args.cluster_yaml}: ok")
    return 0


def add_pretrain_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `raysys pretrain` and `jobs/pretrain.py` (one definition for both)."""
    p.add_argument("--archive", help="archive folder or s3:// prefix (sets `archive`)")
    p.add_argument("--out", help="local run folder (sets `out`)")
    p.add_argument("--steps", type=int, help="optimizer steps (sets `train.steps`)")
    p.add_argument("--address", help="Ray cluster to join (default: RAY_ADDRESS, else a local "
                                     "instance)")
    _add_config_args(p)


def pretrain_overrides(args: argparse.Namespace) -> list[str]:
    """The shorthands as dotted overrides, placed before the explicit ones (which win)."""
    extra = []
    if args.archive is not None:
        extra.append(f"archive={args.archive}")
    if args.out is not None:
        extra.append(f"out={args.out}")
    if args.steps is not None:
        extra.append(f"train.steps={args.steps}")
    return [*extra, *args.overrides]


def start_or_join_ray(address: str | None = None) -> None:
    """Join `address` (or RAY_ADDRESS); otherwise start a new local instance. (A bare
    `ray.init()` would silently join any cluster already running on this machine.)"""
    import os

    from raysys.runtime import init_ray

    if address or os.environ.get("RAY_ADDRESS"):
        init_ray(address)
    else:
        init_ray("local", include_dashboard=True)  # Ray Train's state API needs the dashboard


def pretrain_config(args: argparse.Namespace) -> RaysysConfig:
    from raysys.config import load_config

    return load_config(args.config, pretrain_overrides(args))


def cmd_pretrain(args: argparse.Namespace) -> int:
    import json

    cfg = pretrain_config(args)  # validated before Ray starts
    info = archive_tables(cfg)
    from raysys.train.driver import pretrain

    summary = pretrain(cfg, address=args.address, info=info)  # storage, paths: before Ray too
    print(json.dumps(summary, indent=1, default=str))
    return 0


def add_sweep_args(p: argparse.ArgumentParser) -> None:
    """Arguments of `raysys sweep` and `jobs/sweep.py`: the pretrain ones (--out is the sweep
    folder) plus --resume."""
    p.add_argument("--resume", metavar="SWEEP", help="continue the sweep in this folder "
                   "(Tune's restore; finished trials are not repeated)")
    add_pretrain_args(p)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Every check that needs no Ray runs before Ray starts (exit 2 on a bad config)."""
    import json

    from raysys.config import ConfigError
    from raysys.tune.sweep import resume_sweep, run_sweep, saved_config, sweep_config

    if args.resume:
        if args.config or args.overrides or args.out or args.archive or args.steps:
            raise ConfigError("--resume takes no config, overrides or shorthands: the sweep "
                              "continues with the config it was started with (SWEEP/sweep.yaml)")
        saved_config(args.resume)  # checked before Ray starts
        start_or_join_ray(args.address)
        summary = resume_sweep(args.resume)
    else:
        if not args.out:
            raise ConfigError("--out SWEEP is required (the sweep folder)")
        tree, cfg = sweep_config(args.config, pretrain_overrides(args))
        start_or_join_ray(args.address)
        summary = run_sweep(tree, cfg)
    print(json.dumps(summary, indent=1, default=str))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from raysys.demo import run_demo

    return run_demo(args.out, overrides=args.overrides, entities=args.entities)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="raysys", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__.split("\n\nModules")[0])
    parser.add_argument("--version", action="version", version=f"raysys {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("make-demo-data", help="write the deterministic demo archive")
    p.add_argument("out", help="archive folder to write")
    p.add_argument("--entities", type=int, default=512)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--missing-fraction", type=float, default=0.1)
    p.set_defaults(func=cmd_make_demo_data)

    p = sub.add_parser("make-corpus", help="build a realistic benchmark corpus from recorded "
                                           "material (installs its Debian packages if missing)")
    p.add_argument("name", choices=CORPORA, help="which corpus")
    p.add_argument("out", help="archive folder to write")
    p.add_argument("--entities", type=int, default=600)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--missing-fraction", type=float, default=0.1,
                   help="share of entities missing each view (never all views)")
    p.set_defaults(func=cmd_make_corpus)

    data = sub.add_parser("data", help="archive tools")
    data = data.add_subparsers(dest="data_cmd", required=True)
    p = data.add_parser("inspect", help="stream the archive through decoding; summary + quarantine")
    p.add_argument("archive", help="local folder or s3:// prefix")
    p.add_argument("--out", help="folder for summary.json and quarantine.parquet")
    _add_config_args(p)
    p.set_defaults(func=cmd_data_inspect)

    cfg = sub.add_parser("config", help="config tools")
    cfg = cfg.add_subparsers(dest="cfg_cmd", required=True)
    p = cfg.add_parser("show", help="print the validated config with overrides applied")
    p.add_argument("--explain", action="store_true",
                   help="every key with its value, default and description")
    _add_config_args(p)
    p.set_defaults(func=cmd_config_show)

    cluster = sub.add_parser("cluster", help="Ray cluster tools")
    cluster = cluster.add_subparsers(dest="cluster_cmd", required=True)
    p = cluster.add_parser("check", help="validate a cluster launcher YAML offline (Ray's schema) "
                                         "and against a raysys config (GPUs, install, storage)")
    p.add_argument("cluster_yaml", help="the `ray up` config, e.g. cluster.yaml")
    _add_config_args(p)
    p.set_defaults(func=cmd_cluster_check)

    p = sub.add_parser("pretrain", help="pretrain on an archive (Ray Train + DeepSpeed)")
    add_pretrain_args(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("sweep", help="Ray Tune sweep of pretraining runs (docs/sweeps.md)")
    add_sweep_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("demo", help="the embedded default: demo archive + the main job")
    p.add_argument("--out", default="raysys-demo", help="output folder (default ./raysys-demo)")
    p.add_argument("--entities", type=int, default=DEMO_ENTITIES,
                   help=f"entities of the demo archive when it is built (default {DEMO_ENTITIES})")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(func=cmd_demo)

    from raysys.embed.cli import add_embed_parser
    from raysys.evaluate_cli import add_evaluate_parser

    add_embed_parser(sub)
    add_evaluate_parser(sub)
    return parser


def run_command(func: Callable[[argparse.Namespace], int], args: argparse.Namespace,
                prog: str) -> int:
    """Run a parsed command; a user error (raysys.errors.UserError: config, archive, paths,
    cluster size) is one message and exit 2."""
    from raysys.errors import UserError

    try:
        return func(args)
    except UserError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2


def main(argv: Sequence[str] | None = None, prog: str = "raysys") -> int:
    """Parse and run (run_command)."""
    args = build_parser().parse_args(argv)
    return run_command(args.func, args, prog)


def job_entry(prog: str, description: str,
              add_args: Callable[[argparse.ArgumentParser], None],
              command: Callable[[argparse.Namespace], int]
              ) -> tuple[Callable[[], argparse.ArgumentParser],
                         Callable[[Sequence[str] | None], int]]:
    """(build_parser, main) of a `ray job submit` script in jobs/: one command's arguments at
    the top level, run as `raysys <command>` runs them."""

    def build() -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(prog=prog, description=description)
        add_args(parser)
        return parser

    def run(argv: Sequence[str] | None = None) -> int:
        return run_command(command, build().parse_args(argv), prog)

    return build, run


if __name__ == "__main__":
    sys.exit(main())
