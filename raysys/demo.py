"""The embedded default (`raysys demo`, `make demo`): the main job end to end on a local Ray.

    OUT/archive/           the demo archive (built when absent; `raysys make-demo-data`)
    OUT/inspect/           summary.json + quarantine.parquet of `raysys data inspect`
    OUT/run/               the pretraining run: config.yaml, metrics.jsonl, tensorboard/,
                           checkpoints/, model/ (fp32 export), summary.json,
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
    """`raysys evaluate` on RUN (RUN/eval/: eval.json, report.md, plots): k-fold over every
    entity, trained vs random init vs classic features."""
    from raysys.evaluate import evaluate_checkpoint

    result = evaluate_checkpoint(cfg.out, cfg.archive, overrides=[f"eval.batch_size={batch_size}"])
    return {**result.report, "report": str((result.out / "report.md").resolve())}


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


def _cell(d: Any) -> str:
    return f"{d['mean']:.3f}±{d['ci95']:.3f}" if isinstance(d, dict) and "mean" in d else "skipped"


def headline_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, trained, random init, classic): logistic probe per label set and space, few-shot
    of the main label set (fused) at K = 1 and 5, cross-modal R@1 and graded nDCG@10."""
    models = report["models"]
    rows = []
    for row in report["verdict"]:
        cells = [_cell(row["cells"].get(n, {}).get("logistic"))
                 for n in ("trained", "random_init", "classic")]
        rows.append((f"{row['label']} logistic ({row['space']})", *cells))
    main = next(iter(report["label_sets"]))
    for k in ("1", "5"):
        cells = [_cell(models.get(n, {}).get("spaces", {}).get("fused", {}).get("few_shot", {})
                       .get(main, {}).get("by_k", {}).get(k))
                 for n in ("trained", "random_init", "classic")]
        rows.append((f"{main} few-shot K={k} (fused)", *cells))
    for pair, r in models["trained"]["retrieval"]["cross_modal"].items():
        base = models["random_init"]["retrieval"]["cross_modal"].get(pair, {})
        if isinstance(r, dict) and "R@1" in r:
            rows.append((f"R@1 {pair} (chance {1 / r['n']:.3f})", f"{r['R@1']:.3f}",
                         f"{base.get('R@1', float('nan')):.3f}", "n/a"))
    rel = {n: models[n]["retrieval"].get("relevance", {}) for n in models}
    if "nDCG@10" in rel.get("trained", {}):
        rows.append(("nDCG@10 graded relevance", *[
            f"{rel[n]['nDCG@10']:.3f}" if "nDCG@10" in rel.get(n, {}) else "n/a"
            for n in ("trained", "random_init", "classic")]))
    return rows


def print_summary(cfg: RaysysConfig, run_summary: dict[str, Any], report: dict[str, Any],
                  inspect_dir: Path, seconds: float) -> None:
    run = Path(cfg.out).resolve()
    width = 44
    print("\n" + "=" * 90 + "\nraysys demo: summary\n" + "=" * 90)
    for name, value in training_rows(read_metrics(run)):
        print(f"{name:<{width}}{value}")
    folds = report["protocol"]["folds"]
    print(f"\nevaluation: {folds}-fold over all {report['entities']} entities (mean±95% CI)")
    print(f"{'':<{width}}{'trained':>15}{'random-init':>15}{'classic':>15}")
    for name, *cells in headline_rows(report):
        print(f"{name:<{width}}" + "".join(f"{c:>15}" for c in cells))
    print("\noutputs")
    outputs = [
        ("run dir", run), ("metrics", run / "metrics.jsonl"),
        ("tensorboard", run / "tensorboard" if cfg.train.tensorboard else "off"),
        ("checkpoints", run_summary["checkpoint"]), ("model export", run_summary["model"]),
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
