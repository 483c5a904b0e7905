"""The embedded default (`raysys demo`, `make demo`): the main job end to end on a local Ray.

    OUT/archive/           the demo archive (built when absent; `raysys make-demo-data`)
    OUT/inspect/           summary.json + quarantine.parquet of `raysys data inspect`
    OUT/run/               the pretraining run: config.yaml, metrics.jsonl, tensorboard/,
                           checkpoints/, model/ (fp32 export), summary.json, eval_demo.json,
                           eval/ (`raysys evaluate`: eval.json, report.md, plots)

Steps: build the archive, inspect it, pretrain with configs/demo.yaml (2 workers, DeepSpeed
ZeRO-2 on the CPU, binary + graded-relevance + LOEV terms, queue, gather), then embed the
held-out split with the exported model and with its random initialisation and print a table.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raysys.config import RaysysConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = REPO_ROOT / "configs" / "demo.yaml"
TERMS = ("binary", "continuous", "loev", "cola")


def demo_config(out: Path, overrides: Sequence[str], config: Path = DEMO_CONFIG) -> RaysysConfig:
    """configs/demo.yaml with archive/out under `out`; explicit overrides win."""
    if not config.is_file():
        raise FileNotFoundError(f"{config} not found: `raysys demo` runs from a source checkout "
                                "(pip install -e .)")
    base = [f"archive={out / 'archive'}", f"out={out / 'run'}"]
    return load_config(config, [*base, *overrides])


def ensure_archive(cfg: RaysysConfig, default: Path, entities: int) -> None:
    """Build the demo archive at `default` when it is the configured one and is absent."""
    if Path(cfg.archive) != default:
        return  # a user-given archive is used as it is
    if (default / "manifest.parquet").exists():
        print(f"[demo] using the existing demo archive {default}")
        return
    from raysys.data.demo import make_demo_archive

    print(f"[demo] building the demo archive ({entities} entities) in {default}")
    make_demo_archive(str(default), entities=entities, seed=cfg.seed)


def inspect(cfg: RaysysConfig, out_dir: Path) -> dict[str, Any]:
    from raysys.data.inspect import inspect_archive, print_summary

    summary = inspect_archive(cfg.archive, cfg.data, out_dir=str(out_dir), progress=False)
    print_summary(summary, out_dir=str(out_dir))
    return summary


def evaluate_run(cfg: RaysysConfig, batch_size: int = 64) -> dict[str, Any]:
    """`raysys evaluate` on RUN (RUN/eval/: eval.json, report.md, plots), plus the demo's
    headline diagnostics of the same embeddings in RUN/eval_demo.json."""
    from raysys.data.pipeline import open_archive
    from raysys.evaluate import evaluate_checkpoint
    from raysys.train.diagnostics import compare_to_baseline

    result = evaluate_checkpoint(cfg.out, cfg.archive, overrides=[f"eval.batch_size={batch_size}"])
    pipe = open_archive(cfg.archive, cfg.data)
    ratings = pipe.info.relevance.frame if pipe.info.relevance is not None else None
    report = compare_to_baseline(result.trained, result.baseline, ratings=ratings, seed=cfg.seed)
    report.update(model=result.report["model"], model_id=result.report["model_id"],
                  step=result.report["step"], report=str((result.out / "report.md").resolve()))
    path = Path(cfg.out) / "eval_demo.json"
    path.write_text(json.dumps(report, indent=1))
    return report


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def training_rows(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Steps, first/last loss and terms, throughput and data wait from metrics.jsonl."""
    records = [r for r in records if "loss" in r]  # in-training eval records are separate
    if not records:
        raise ValueError("metrics.jsonl is empty: the run logged no step")
    first, last = records[0], records[-1]
    fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
    rows = [("steps", str(last["step"])),
            (f"loss (step {first['step']} -> {last['step']})",
             f"{fmt(first.get('loss'))} -> {fmt(last.get('loss'))}")]
    rows += [(f"  {t}", f"{fmt(first.get(t))} -> {fmt(last.get(t))}")
             for t in TERMS if t in last]
    steady = records[1:] or records  # the first log interval includes start-up
    speed = [r["samples_per_s"] for r in steady if r.get("samples_per_s") is not None]
    wait = [r["data_wait_fraction"] for r in steady if r.get("data_wait_fraction") is not None]
    rows.append(("samples/s (median after the first log)",
                 f"{statistics.median(speed):.1f}" if speed else "n/a"))
    rows.append(("data-wait (mean after the first log)",
                 f"{statistics.mean(wait):.0%}" if wait else "n/a"))
    return rows


def _num(v: Any) -> str:
    return "skipped" if v is None else f"{v:.3f}"


def print_summary(cfg: RaysysConfig, run_summary: dict[str, Any], report: dict[str, Any],
                  inspect_dir: Path, seconds: float) -> None:
    from raysys.train.diagnostics import headline

    run = Path(cfg.out).resolve()
    width = 44
    print("\n" + "=" * 78 + "\nraysys demo: summary\n" + "=" * 78)
    for name, value in training_rows(read_metrics(run)):
        print(f"{name:<{width}}{value}")
    print(f"\nheld-out diagnostics ({report['entities']} eval entities, label "
          f"'{report['label']}')")
    print(f"{'':<{width}}{'trained':>12}{'random-init':>14}{'chance':>10}")
    for name, trained, baseline, chance in headline(report):
        chance_text = "" if chance is None else f"{chance:.3f}"
        print(f"{name:<{width}}{_num(trained):>12}{_num(baseline):>14}{chance_text:>10}")
    print("\noutputs")
    outputs = [
        ("run dir", run), ("metrics", run / "metrics.jsonl"),
        ("tensorboard", run / "tensorboard" if cfg.train.tensorboard else "off"),
        ("checkpoints", run_summary["checkpoint"]), ("model export", run_summary["model"]),
        ("held-out diagnostics", run / "eval_demo.json"),
        ("evaluation report", report["report"]),
        ("inspect summary", inspect_dir.resolve() / "summary.json"),
        ("quarantine", inspect_dir.resolve() / "quarantine.parquet"),
    ]
    for name, where in outputs:
        print(f"  {name:<22}{where}")
    print(f"\nwall time {seconds:.0f} s")


def run_demo(out: str | Path = "raysys-demo", overrides: Sequence[str] = (), *,
             entities: int = 512) -> int:
    """Archive -> inspect -> pretrain -> held-out diagnostics -> summary table. Returns 0 on
    success, 3 when the archive has too many bad records."""
    import time

    from raysys.cli import start_or_join_ray
    from raysys.train.driver import pretrain

    started = time.perf_counter()
    out = Path(out).absolute()
    cfg = demo_config(out, overrides)
    ensure_archive(cfg, out / "archive", entities)
    start_or_join_ray()  # a local instance unless RAY_ADDRESS is set
    inspect_dir = out / "inspect"
    if not inspect(cfg, inspect_dir)["ok"]:
        return 3
    run_summary = pretrain(cfg)
    report = evaluate_run(cfg)
    print_summary(cfg, run_summary, report, inspect_dir, time.perf_counter() - started)
    return 0
