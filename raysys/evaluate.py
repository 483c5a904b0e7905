"""`raysys evaluate`: a checkpoint's held-out diagnostics against its random init, with a report.

    raysys evaluate --checkpoint RUN --archive ARCHIVE [--out DIR] [key=value ...]

CKPT is a run folder (its `model/` export is used, and `metrics.jsonl` gives the curves over
steps) or an export folder (`RUN/model`). The evaluation split (`data.eval_fraction` and seed of
the export's data config, so the run's own held-out entities) is decoded once and embedded by the
trained model and by the random-init model (`torch.manual_seed(seed)`, the run's `seed` from
RUN/config.yaml when present). Output: DIR/eval.json (every metric of both models, config, model
id) and DIR/report.md with PNG plots; DIR defaults to RUN/eval (or CKPT/eval for a bare export).
Decoding and embedding run in this process (the split is small): no Ray instance is needed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raysys.config import RaysysConfig, load_config
from raysys.eval import evaluate_embeddings, few_shot, subspace_probes
from raysys.eval.config import EvaluationConfig
from raysys.train.diagnostics import (
    EmbeddedSplit,
    cross_modal_retrieval,
    random_init_model,
    relevance_retrieval,
)
from raysys.train.export import META_FILE, load_model
from raysys.train.intrain_eval import check_label_columns, decode_split, embed_heads, train_mask

EVAL_FILE, REPORT_FILE = "eval.json", "report.md"


class EvaluateError(ValueError):
    """Bad input to `raysys evaluate` (checkpoint path, archive); the message names it."""


@dataclass
class Checkpoint:
    model_dir: Path
    run_dir: Path | None  # the run folder when the export sits in one (metrics.jsonl, config)


@dataclass
class Evaluation:
    report: dict[str, Any]
    trained: EmbeddedSplit
    baseline: EmbeddedSplit
    out: Path


def say(text: str) -> None:
    print(f"[evaluate] {text}", flush=True)


def resolve_checkpoint(path: str | Path) -> Checkpoint:
    """A run folder (RUN/model/model.json) or an export folder (model.json)."""
    p = Path(path)
    if not p.exists():
        raise EvaluateError(f"--checkpoint {path}: no such folder")
    if (p / "model" / META_FILE).is_file():
        return Checkpoint(p / "model", p)
    if (p / META_FILE).is_file():
        run = p.parent if (p.parent / "metrics.jsonl").is_file() else None
        return Checkpoint(p, run)
    raise EvaluateError(f"--checkpoint {path}: no {META_FILE} in it or in its model/ folder "
                        "(expected a run folder RUN or its export RUN/model)")


def eval_config(ckpt: Checkpoint, archive: str, config: str | None,
                overrides: list[str]) -> RaysysConfig:
    """--config, else the run's own config.yaml, else defaults; then the overrides."""
    base = config
    if base is None and ckpt.run_dir is not None and (ckpt.run_dir / "config.yaml").is_file():
        base = str(ckpt.run_dir / "config.yaml")
    return load_config(base, [f"archive={archive}", *overrides])


def open_eval_archive(archive: str, meta: dict[str, Any]):
    """The archive with the export's data config and tabular statistics; fails when the
    archive lacks a view the model was trained on."""
    from raysys.data.config import DataConfig
    from raysys.data.features import TabularStats
    from raysys.data.pipeline import open_archive
    from raysys.embed.plan import Export, archive_views, check_tabular

    cfg = DataConfig.model_validate(meta["data"])
    try:
        pipe = open_archive(archive, cfg)
    except (FileNotFoundError, ValueError) as e:
        raise EvaluateError(f"--archive {archive}: {e}") from e
    model_views, have = list(meta["inputs"]["modalities"]), archive_views(pipe.info)
    missing = [v for v in model_views if v not in have]
    if missing:
        raise EvaluateError(f"checkpoint does not match the archive: the model was trained on "
                            f"{model_views}, the archive {archive} has no {missing} records "
                            f"(it has {have})")
    if "tabular" in model_views:
        check_tabular(Export(b"", meta), pipe.info)
        pipe.stats = TabularStats.from_dict(meta["tabular_stats"])
    return pipe


# -- metrics of one model -----------------------------------------------------------------------

def few_shot_curve(x: np.ndarray, y: np.ndarray, cfg: EvaluationConfig) -> dict[str, Any]:
    """Accuracy against K (`eval.few_shot_shots`): W = min(few_shot_ways, classes) ways;
    queries = min(few_shot_queries, n_W - K) with n_W the W-th largest class size. A K that
    leaves no query is `{"skipped": reason}`."""
    counts = np.sort(np.unique(y, return_counts=True)[1])[::-1]
    ways = int(min(cfg.few_shot_ways, counts.size))
    out: dict[str, Any] = {"ways": ways, "chance": 1.0 / max(ways, 1), "by_k": {}}
    for k in cfg.few_shot_shots:
        queries = min(cfg.few_shot_queries, int(counts[ways - 1]) - k) if ways >= 2 else 0
        if queries < 1:
            out["by_k"][str(k)] = {"skipped": f"fewer than {max(ways, 2)} classes have more "
                                              f"than K={k} samples"}
            continue
        res = few_shot(x, y, ways=ways, shots=k, queries=queries, episodes=cfg.few_shot_episodes,
                       seed=cfg.seed, head=cfg.few_shot_heads[0], skip_small_classes=True)
        out["by_k"][str(k)] = {**res, "queries": queries}
    return out


def _guarded(fn, *args, **kwargs) -> Any:
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        return {"skipped": str(e).splitlines()[0]}


def probes(split: EmbeddedSplit, heads: dict[str, dict[str, np.ndarray]],
           cfg: EvaluationConfig) -> Any:
    """LOEV heads vs backbone of `eval.probe_modality` on each `eval.factors` column."""
    m = cfg.probe_modality
    if not cfg.factors:
        return {"skipped": "eval.factors is empty"}
    if m not in split.present:
        return {"skipped": f"the model has no {m} encoder (eval.probe_modality)"}
    keep = split.present[m]
    spaces = {"backbone": split.backbone[m][keep],
              **{h: per_mod[m][keep] for h, per_mod in heads.items()}}
    factors = {name: split.labels[col].to_numpy()[keep] for name, col in cfg.factors.items()}
    kinds = {k: v for k, v in cfg.factor_kinds.items() if k in factors}
    return _guarded(subspace_probes, spaces, factors, factor_kinds=kinds,
                    test_fraction=cfg.test_fraction, seed=cfg.seed, k=cfg.neighbours_k,
                    C=cfg.probe_C)


def evaluate_model(split: EmbeddedSplit, heads: dict[str, dict[str, np.ndarray]],
                   cfg: EvaluationConfig, ratings: Any) -> dict[str, Any]:
    """Every metric of one model's embeddings (fused invariant space unless said otherwise)."""
    fused, keep = split.fused()
    x = fused[keep]
    ys = {name: split.labels[col].to_numpy()[keep] for name, col in cfg.label_sets.items()}
    mask, how = train_mask(next(iter(ys.values())), cfg)
    battery = cfg.model_copy(update={"few_shot_shots": []})  # the curve below replaces it
    labels: dict[str, Any] = {}
    for name, y in ys.items():
        got = _guarded(evaluate_embeddings, x, {name: y}, config=battery, train_mask=mask)
        labels.update(got.get("labels", {name: got}))
    for block in labels.values():
        block.pop("few_shot", None)
    return {
        "space": "fused", "entities": int(keep.sum()),
        "split": {"train": int(mask.sum()), "test": int((~mask).sum()), "how": how},
        "labels": labels,
        "few_shot": {name: few_shot_curve(x, y, cfg) for name, y in ys.items()},
        "retrieval": {"cross_modal": cross_modal_retrieval(split, ks=tuple(cfg.retrieval_ks)),
                      **({"relevance": relevance_retrieval(fused, keep, split.keys, ratings,
                                                           k=cfg.map_k)}
                         if ratings is not None else {})},
        "subspace_probes": probes(split, heads, cfg),
    }


# -- the command --------------------------------------------------------------------------------

def read_history(run_dir: Path | None) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl" if run_dir is not None else None
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate_checkpoint(checkpoint: str | Path, archive: str, out: str | Path | None = None, *,
                        config: str | None = None, overrides: list[str] | None = None
                        ) -> Evaluation:
    """Embed, measure (trained and random init), write eval.json + report.md + plots."""
    from raysys.eval.report import write_report

    started = time.perf_counter()
    ckpt = resolve_checkpoint(checkpoint)
    cfg = eval_config(ckpt, archive, config, list(overrides or []))
    out_dir = Path(out) if out is not None else (ckpt.run_dir or ckpt.model_dir) / "eval"
    model, meta = load_model(ckpt.model_dir)
    say(f"model {ckpt.model_dir} (step {meta['step']}, id {meta['model_id']})")
    pipe = open_eval_archive(archive, meta)
    check_label_columns(cfg.eval, list(pipe.info.manifest.labels.columns),
                        ("label_sets", "factors"))
    batches = decode_split(pipe, "eval", cfg.eval.batch_size)
    labels = pipe.entities.select("eval").labels(pipe.info)
    say(f"decoded {len(labels)} held-out entities in {time.perf_counter() - started:.1f} s")
    ratings = pipe.info.relevance.frame if pipe.info.relevance is not None else None
    sides, splits = {}, {}
    for side, net in (("trained", model), ("random_init", random_init_model(meta, cfg.seed))):
        splits[side], heads = embed_heads(net, batches, labels)
        sides[side] = evaluate_model(splits[side], heads, cfg.eval, ratings)
        say(f"{side}: embedded and measured ({time.perf_counter() - started:.1f} s)")
    history = read_history(ckpt.run_dir)
    report = {
        "checkpoint": str(Path(checkpoint).resolve()), "model": str(ckpt.model_dir.resolve()),
        "run": str(ckpt.run_dir.resolve()) if ckpt.run_dir else None,
        "model_id": meta["model_id"], "step": meta["step"], "archive": archive,
        "split": "eval", "entities": len(labels), "baseline_seed": cfg.seed,
        "config": {"eval": cfg.eval.model_dump(mode="json"), "seed": cfg.seed},
        **sides,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    fused = {side: splits[side].fused() for side in sides}
    first = next(iter(cfg.eval.label_sets.values()))
    projections = {side: (x[keep], splits[side].labels[first].to_numpy()[keep])
                   for side, (x, keep) in fused.items()}
    report["plots"] = [p.name for p in write_report(
        out_dir, report, history=history, projections=projections,
        method=cfg.eval.projection, seed=cfg.seed)]
    (out_dir / EVAL_FILE).write_text(json.dumps(report, indent=1, allow_nan=False))
    say(f"wrote {out_dir / EVAL_FILE} and {out_dir / REPORT_FILE} "
        f"({len(report['plots'])} plots) in {time.perf_counter() - started:.1f} s")
    return Evaluation(report, splits["trained"], splits["random_init"], out_dir)


def add_evaluate_parser(sub: Any) -> None:
    p = sub.add_parser("evaluate", help="held-out diagnostics of a checkpoint vs its random "
                                        "init: eval.json + report.md with plots")
    p.add_argument("--checkpoint", required=True, help="run folder RUN or export RUN/model")
    p.add_argument("--archive", required=True, help="archive folder or s3:// prefix")
    p.add_argument("--out", help="output folder (default RUN/eval)")
    p.add_argument("--config", help="YAML config (default: the run's config.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: Any) -> int:
    import sys

    from raysys.config import ConfigError

    try:
        result = evaluate_checkpoint(args.checkpoint, args.archive, args.out,
                                     config=args.config, overrides=args.overrides)
    except ConfigError:
        raise  # reported by raysys.cli.main
    except (ValueError, FileNotFoundError) as e:  # EvaluateError, label columns, archive
        print(f"raysys evaluate: {e}", file=sys.stderr)
        return 2
    print(f"report: {result.out / REPORT_FILE}")
    return 0
