"""`raysys evaluate`: a checkpoint against its random init and the classic features, k-fold.

    raysys evaluate --checkpoint RUN --archive ARCHIVE [--out DIR] [--split all|train|eval]
                    [--compare RUN2]... [key=value ...]

CKPT is a run folder (its `model/` export is used, and `metrics.jsonl` gives the curves over
steps) or an export folder (`RUN/model`). Every entity of `--split` (default: the whole
archive) is decoded once, as `raysys embed` does (augmentation off, audio cut into windows
covering the whole file, pooled), and embedded by the trained model, by the same architecture
at its random initialisation (`torch.manual_seed(seed)`, the run's `seed`), by any `--compare`
export; the classic hand-crafted features (raysys.eval.classic) are the no-learning baseline.
Each is measured on the same seeded stratified k-fold split (`eval.folds`, 5) over every
labelled entity (raysys.eval.protocol), few-shot episodes drawn from every labelled entity.
Label sets and factors are discovered from the manifest unless `eval.label_sets` /
`eval.factors` name them. Output: DIR/eval.json and DIR/report.md (a verdict table first)
with PNG plots; DIR defaults to RUN/eval (or CKPT/eval for a bare export). No Ray instance.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raysys.config import RaysysConfig, load_config
from raysys.errors import UserError
from raysys.eval.measure import FUSED, Spaces, measure
from raysys.eval.protocol import compare, resolve_labels
from raysys.evaluate_cli import EVAL_FILE, REPORT_FILE, SPLITS, refuse_ineffective
from raysys.train.diagnostics import random_init_model
from raysys.train.export import META_FILE, load_model


class EvaluateError(ValueError, UserError):
    """Bad input to `raysys evaluate` (checkpoint path, archive); the message names it."""


@dataclass
class Checkpoint:
    model_dir: Path
    run_dir: Path | None  # the run folder when the export sits in one (metrics.jsonl, config)


@dataclass
class Evaluation:
    report: dict[str, Any]
    spaces: dict[str, Spaces]  # model or baseline name -> its embeddings of the entities
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


# -- the command --------------------------------------------------------------------------------

def read_history(run_dir: Path | None) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl" if run_dir is not None else None
    if path is None or not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def embed_models(pipe, frame, models: dict[str, tuple[Any, dict[str, Any]]], batch_size: int,
                 inputs: dict[str, list[dict[str, np.ndarray]]] | None = None
                 ) -> dict[str, Spaces]:
    """Spaces of every model; entities are preprocessed once per distinct data config (each
    model's preprocessed batches land in `inputs` when given)."""
    from raysys.embed.config import AudioWindows
    from raysys.embed.embedder import audio_layout
    from raysys.embed.plan import Export
    from raysys.embed.spaces import embed_model, preprocess

    cache: dict[str, list[dict[str, np.ndarray]]] = {}
    out = {}
    for name, (net, meta) in models.items():
        data = Export(b"", meta).data_config(list(net.modalities))
        key = data.model_dump_json() + json.dumps(meta.get("tabular_stats"), sort_keys=True)
        if key not in cache:
            cache[key] = preprocess(pipe, data, meta.get("tabular_stats"), frame, batch_size,
                                    AudioWindows())
        out[name] = embed_model(name, net, cache[key], audio_layout(meta))
        if inputs is not None:
            inputs[name] = cache[key]
        say(f"embedded with {name}")
    return out


def supervised_baseline(meta: dict[str, Any], batches: list[dict[str, np.ndarray]],
                        labels: np.ndarray, cfg: Any, seed: int) -> dict[str, Any]:
    """The few-shot curve of the audio encoder trained from scratch on each episode's shots
    (raysys.eval.supervised), on the main label; `{skipped}` without audio."""
    import torch

    from raysys.embed.embedder import audio_layout
    from raysys.embed.spaces import audio_windows
    from raysys.eval.supervised import supervised_few_shot
    from raysys.models.base import fresh_copy

    if "audio" not in meta["inputs"]["modalities"]:
        return {"skipped": "the model has no audio encoder"}
    encoder = random_init_model(meta, seed).encoders["audio"]
    windows = audio_windows(batches, audio_layout(meta))

    def make_net(ways: int) -> torch.nn.Module:
        return torch.nn.Sequential(fresh_copy(encoder), torch.nn.Linear(encoder.out_dim, ways))

    started = time.perf_counter()
    got = supervised_few_shot(make_net, windows, labels, shots=cfg.few_shot_shots,
                              ways=cfg.few_shot_ways, queries=cfg.few_shot_queries,
                              episodes=cfg.supervised_episodes, seed=cfg.seed,
                              epochs=cfg.supervised_epochs,
                              min_steps=cfg.supervised_min_steps)
    say(f"supervised from scratch: {cfg.supervised_episodes} episodes per K in "
        f"{time.perf_counter() - started:.0f} s")
    return {**got, "space": "audio"}


def sensitivities(models: dict[str, tuple[Any, dict[str, Any]]], frame, clips: int
                  ) -> dict[str, dict[str, Any]]:
    """How far each model's audio heads move under time stretch and pitch shift
    (raysys.embed.sensitivity) on the first `clips` audio files; `{}` when off or no model
    reads audio."""
    from raysys.embed.plan import Export
    from raysys.embed.sensitivity import head_sensitivity, read_clips

    readers = {name: (net, Export(b"", meta).data_config(list(net.modalities)))
               for name, (net, meta) in models.items() if "audio" in net.modalities}
    if clips == 0 or not readers:
        return {}
    waves: dict[int, list[np.ndarray]] = {}  # per sample rate
    out: dict[str, dict[str, Any]] = {}
    for name, (net, data) in readers.items():
        if data.sample_rate not in waves:
            waves[data.sample_rate] = read_clips(frame["audio"], data.sample_rate, clips)
        try:
            out[name] = {"clips": len(waves[data.sample_rate]),
                         "distance": head_sensitivity(net, data, waves[data.sample_rate])}
        except ValueError as e:  # fewer than 2 readable clips
            out[name] = {"skipped": str(e)}
    say(f"augmentation sensitivity of {list(out)} on {clips} audio clips")
    return out


def load_compare(paths: list[str]) -> dict[str, tuple[Any, dict[str, Any]]]:
    """Other runs' exports for the same table (`--compare RUN ...`), named by their folder."""
    out = {}
    for path in paths:
        ckpt = resolve_checkpoint(path)
        net, meta = load_model(ckpt.model_dir)
        name = (ckpt.run_dir or ckpt.model_dir).name
        while name in out or name in ("trained", "random_init", "classic"):
            name += "'"
        out[name] = (net, meta)
    return out


def held_out_keys(pipe: Any, keys: list[str]) -> set[str] | None:
    """The evaluated entities that training held out (`data.eval_fraction` of the run): graded
    relevance is measured on their rating lists only, which the ListNet term never saw; None
    when the run held nothing out."""
    table = pipe.entities.frame
    held = set(table.loc[table["split"] == "eval", "key"]) & set(keys)
    return held or None


def evaluate_checkpoint(checkpoint: str | Path, archive: str, out: str | Path | None = None, *,
                        config: str | None = None, overrides: list[str] | None = None,
                        split: str = "all", compare: list[str] | None = None) -> Evaluation:
    """Embed every entity of `split`, measure the trained model, its random init, the classic
    features and `compare` exports on the same folds; write eval.json + report.md + plots."""
    from raysys.embed.spaces import classic_spaces, entity_frame
    from raysys.eval.report import write_report

    started = time.perf_counter()
    refuse_ineffective(list(overrides or []))  # e.g. data.eval_fraction: no effect here
    ckpt = resolve_checkpoint(checkpoint)
    cfg = eval_config(ckpt, archive, config, list(overrides or []))
    if split not in SPLITS:
        raise EvaluateError(f"--split {split}: choose one of {list(SPLITS)}")
    out_dir = Path(out) if out is not None else (ckpt.run_dir or ckpt.model_dir) / "eval"
    model, meta = load_model(ckpt.model_dir)
    say(f"model {ckpt.model_dir} (step {meta['step']}, id {meta['model_id']})")
    pipe = open_eval_archive(archive, meta)
    label_sets, factors, kinds = resolve_labels(cfg.eval.label_sets, cfg.eval.factors,
                                                cfg.eval.factor_kinds, pipe.info.manifest.labels)
    if not label_sets:
        raise EvaluateError(f"--archive {archive}: the manifest has no categorical label "
                            "column (`label` or `label_*`): nothing to classify")
    models = {"trained": (model, meta), "random_init": (random_init_model(meta, cfg.seed), meta),
              **load_compare(list(compare or []))}
    frame = entity_frame(pipe, split)
    labels = pipe.entities.select(split).labels(pipe.info)
    say(f"{len(frame)} entities ({split}); label sets {label_sets}; factors {kinds}")
    inputs: dict[str, list[dict[str, np.ndarray]]] = {}
    spaces = embed_models(pipe, frame, models, cfg.eval.batch_size, inputs)
    if cfg.eval.classic:
        spaces["classic"] = classic_spaces(pipe, frame, list(model.modalities),
                                           pipe.cfg.sample_rate)
    ratings = pipe.info.relevance.frame if pipe.info.relevance is not None else None
    keys = frame["key"].tolist()
    held_out = held_out_keys(pipe, keys)
    results = {}
    for name, sp in spaces.items():
        results[name] = measure(sp, labels, keys, label_sets=label_sets, factors=factors,
                                kinds=kinds, cfg=cfg.eval, ratings=ratings,
                                rating_queries=held_out)
        say(f"measured {name} ({time.perf_counter() - started:.0f} s)")
    for name, block in sensitivities(models, frame, cfg.eval.sensitivity_clips).items():
        results[name]["sensitivity"] = block
    main_name, main_label = next(iter(label_sets.items()))
    if cfg.eval.supervised_episodes:
        results["trained"]["supervised_few_shot"] = {
            main_name: supervised_baseline(meta, inputs["trained"],
                                           labels[main_label].to_numpy(), cfg.eval, cfg.seed)}
    report = {
        "checkpoint": str(Path(checkpoint).resolve()), "model": str(ckpt.model_dir.resolve()),
        "run": str(ckpt.run_dir.resolve()) if ckpt.run_dir else None,
        "model_id": meta["model_id"], "step": meta["step"], "archive": archive,
        "split": split, "entities": len(frame), "baseline_seed": cfg.seed,
        "protocol": {"folds": cfg.eval.folds, "seed": cfg.eval.seed,
                     "few_shot_shots": cfg.eval.few_shot_shots},
        "label_sets": label_sets, "factors": factors, "factor_kinds": kinds,
        "config": {"eval": cfg.eval.model_dump(mode="json"), "seed": cfg.seed},
        "models": results,
    }
    report["verdict"] = verdict_rows(report)
    out_dir.mkdir(parents=True, exist_ok=True)
    projections = {side: (spaces[side].embeddings[FUSED][spaces[side].present[FUSED]],
                          labels[main_label].to_numpy()[spaces[side].present[FUSED]])
                   for side in ("trained", "random_init")}
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["plots"] = [p.name for p in write_report(
        out_dir, report, history=read_history(ckpt.run_dir), projections=projections,
        method=cfg.eval.projection, seed=cfg.seed)]
    (out_dir / EVAL_FILE).write_text(json.dumps(report, indent=1, allow_nan=False))
    say(f"wrote {out_dir / EVAL_FILE} and {out_dir / REPORT_FILE} "
        f"({len(report['plots'])} plots) in {time.perf_counter() - started:.1f} s")
    return Evaluation(report, spaces, out_dir)


def verdict_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (label set, space): NCC and logistic of every model, and the trained
    model against the random init and the classic features (`compare`: outside the CI?).
    The fused space only with several modalities (with one it is that modality's)."""
    models = report["models"]
    modalities = [s for s in models["trained"]["spaces"] if s != FUSED]
    spaces = modalities if len(modalities) == 1 else [FUSED, *modalities]
    rows = []
    for label in report["label_sets"]:
        for space in spaces:
            cells = {name: m["spaces"].get(space, {}).get("labels", {}).get(label, {})
                     for name, m in models.items()}
            trained = cells["trained"]
            row: dict[str, Any] = {"label": label, "space": space, "cells": cells}
            for base in ("random_init", "classic"):
                if base in cells:
                    row[f"vs_{base}"] = {clf: compare(trained.get(clf), cells[base].get(clf))
                                         for clf in ("ncc", "logistic")}
            rows.append(row)
    return rows
