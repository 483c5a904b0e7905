"""Evaluation during training (`eval.every`), off the training ranks' critical path.

    every N steps (and at the start): all ranks -> snapshot (ZeRO-3: a gather every rank joins)
    rank 0 -> ray.put(fp32 weights) -> EvalActor.evaluate.remote(step, weights)
    every step, rank 0 -> ray.wait(timeout=0) -> finished records sent with its next report
    (`eval.wait`: rank 0 waits for each evaluation it launches, the other ranks at the next
    collective)
    end of training -> wait for the outstanding evaluations, one more report
    (the controller writes them to metrics.jsonl/TensorBoard: raysys.train.callbacks)

The in-training evaluation stands on the fixed held-out split (`data.eval_fraction`), small by
design; every record says how many entities it used (`eval/entities`). Each held-out entity
is predicted once, out of fold (stratified k-fold, `eval.folds`, as `raysys evaluate` does:
raysys.eval.protocol), so even ~100 held-out entities give ~100 predictions.

The actor (`eval.cpus` logical CPUs, 0 by default so it fits next to training on 2 cores)
decodes the held-out split once (augmentation off, one view per modality), keeps the batches,
and per request embeds them with the snapshot and computes:
- `eval/<set>/<ncc|logistic|knn|cdnv>` in the fused shared-head space (the mean of the
  present modalities' embeddings) for every label set, plus `eval/random/...`, the first label
  set permuted (a control that must stay near chance);
- with 2+ modalities, `eval/<modality>/<set>/<metric>` in each modality's invariant head (does
  the modality keep its own information?) and `eval/retrieval/<a>-><b>/R@1` (the same
  entity's `b` view found from its `a` view in the shared head);
- with graded ratings (relevance.parquet), `eval/relevance/nDCG@<eval.map_k>` among the
  held-out entities.
Label sets default to the manifest's categorical label columns. No few-shot episodes here.

Records: `{"step": s, "eval/<set>/<metric>": value, ..., "eval/entities": n,
"eval/seconds": t}` (see docs/evaluation.md). They may land after later training records;
a resumed run keeps those of steps <= the resumed step and never evaluates a step twice.
Every `ray.train.report` of rank 0 carries the latest finished record (`eval/step` says of
which step), and the run ends with one more report holding the last step's evaluation: this
is how a sweep (Ray Tune, ASHA) sees the evaluation.

`raysys evaluate` embeds differently (every entity, whole audio files in windows, as `raysys
embed` does: raysys/embed/spaces.py) and adds baselines; this module keeps the cheap
held-out check.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from raysys.data.batch import HeteroBatch
from raysys.data.pipeline import Pipeline
from raysys.data.rows import RowBuilder
from raysys.eval import cdnv, random_labels
from raysys.eval.config import EvaluationConfig
from raysys.eval.measure import Spaces, cross_modal, graded_relevance
from raysys.eval.protocol import kfold_classification, resolve_labels
from raysys.models.config import INVARIANT_HEAD, ModelConfig
from raysys.models.multimodal import ModelInputs, MultiViewModel
from raysys.train.diagnostics import EmbeddedSplit

PREFIX = "eval/"


# -- shared with `raysys evaluate` --------------------------------------------------------------

def decode_split(pipe: Pipeline, split: str = "eval", batch_size: int = 64) -> list[HeteroBatch]:
    """Every entity of `split` as HeteroBatches (plan order, augmentation off, one view per
    modality), decoded in this process.

    No Ray Data here on purpose: Ray Data's `from_pandas` starts 1-CPU metadata tasks, which
    never fit beside a training run on 2 cores (training workers hold the rest), and the
    held-out split is small and decoded once. Unusable records are dropped from their view
    exactly as in training (quarantine semantics of `RowBuilder`)."""
    cfg = pipe.cfg.model_copy(deep=True)
    cfg.views_per_modality = 1  # augmentation off: further views would be identical copies
    cfg.augment.enabled = False
    plan = pipe.plan(split, epochs=1, shuffle=False).rows()
    if len(plan) == 0:
        raise ValueError(f"split {split!r} has no entities (data.eval_fraction too small?)")
    builder = RowBuilder(cfg, pipe.stats, pipe.info.logs)
    return [HeteroBatch.from_numpy(builder(plan.iloc[i : i + batch_size]))
            for i in range(0, len(plan), batch_size)]


@torch.no_grad()
def embed_heads(model: MultiViewModel, batches: list[HeteroBatch], labels: Any
                ) -> tuple[EmbeddedSplit, dict[str, dict[str, np.ndarray]]]:
    """Embed decoded batches: the EmbeddedSplit of the shared head (L2-normalised; the
    invariant head unless the model has a cross head, raysys.models.config) and
    every head's normalised embeddings `{head: {modality: [N, d]}}` (zeros where absent)."""
    model = model.eval()
    parts: dict[str, list[np.ndarray]] = {}
    keys: list[str] = []
    for batch in batches:
        keys += batch.keys
        parts.setdefault("ids", []).append(batch.entity_id.numpy())
        for m in model.modalities:
            if m not in batch.views:
                continue
            backbone, heads = model.encode_modality(m, batch.views[m])
            parts.setdefault(f"backbone.{m}", []).append(backbone[:, 0].float().numpy())
            parts.setdefault(f"present.{m}", []).append(batch.views[m].present.bool().numpy())
            for h, e in heads.items():
                parts.setdefault(f"{h}.{m}", []).append(
                    F.normalize(e[:, 0].float(), dim=-1).numpy())
    cat = {name: np.concatenate(p) for name, p in parts.items()}
    mods = [m for m in model.modalities if f"present.{m}" in cat]
    heads = {h: {m: cat[f"{h}.{m}"] for m in mods} for h in model.output_names()}
    labels = labels.set_index("key").loc[keys].reset_index()
    split = EmbeddedSplit(keys=keys, entity_ids=cat["ids"],
                          embeddings=heads[model.cfg.shared_head()],
                          present={m: cat[f"present.{m}"] for m in mods},
                          backbone={m: cat[f"backbone.{m}"] for m in mods}, labels=labels)
    return split, heads


def label_sets_of(cfg: EvaluationConfig, labels: Any) -> dict[str, str]:
    """The categorical label sets this evaluation reads (`eval.label_sets`, or the ones found
    in the manifest's label columns); a configured column that is missing is a ValueError
    naming the `eval.*` key. Raises when there is no categorical label column at all."""
    sets, _, _ = resolve_labels(cfg.label_sets, cfg.factors, cfg.factor_kinds, labels)
    if not sets:
        raise ValueError("the archive's manifest has no categorical label column (`label` or "
                         "`label_*` with text or integer values): nothing to evaluate; set "
                         "eval.every=0 or add labels")
    return sets


def check(cfg: Any, pipe: Pipeline) -> None:
    """Driver-side, before workers start: with `eval.every > 0` the label columns exist and
    the archive has a held-out split."""
    if cfg.eval.every == 0:
        return
    label_sets_of(cfg.eval, pipe.info.manifest.labels)
    if len(pipe.entities.select("eval")) == 0:
        raise ValueError("eval.every > 0 but the archive has no held-out entities "
                         "(raise data.eval_fraction)")


# -- the diagnostics ----------------------------------------------------------------------------

CLASSIFIERS = ("ncc", "logistic", "knn")  # out-of-fold accuracies (raysys.eval.protocol)
LABEL_METRICS = (*CLASSIFIERS, "cdnv")
RANDOM = "random"  # the random-label control's label-set name
RETRIEVAL, RELEVANCE = "retrieval", "relevance"


def label_metrics(x: np.ndarray, y: np.ndarray, cfg: EvaluationConfig) -> dict[str, float]:
    """Out-of-fold NCC / logistic / kNN accuracy of the held-out entities (stratified k-fold,
    `eval.folds`, as `raysys evaluate`; folds capped by the largest class) and their CDNV."""
    labelled = pd.notna(y)
    x, y = x[labelled], np.asarray(y[labelled].tolist())  # object columns -> their own dtype
    got = kfold_classification(x, y, folds=cfg.folds, seed=cfg.seed, C=cfg.probe_C,
                               knn_k=cfg.knn_k, classifiers=CLASSIFIERS)
    out = {name: got[name]["mean"] for name in CLASSIFIERS}
    out["cdnv"] = cdnv(x, y, min_class_size=1)
    return out


def quick_metrics(x: np.ndarray, label_sets: dict[str, np.ndarray], cfg: EvaluationConfig,
                  prefix: str = PREFIX, random_control: bool | None = None) -> dict[str, Any]:
    """Flat `<prefix><set>/<metric>` values of one space (plus the random-label control, the
    first set permuted); `<prefix><set>/skipped` holds the reason when a label set cannot be
    evaluated (e.g. a single class)."""
    sets = dict(label_sets)
    if cfg.random_control if random_control is None else random_control:
        sets[RANDOM] = random_labels(next(iter(label_sets.values())), cfg.seed)
    out: dict[str, Any] = {}
    for name, y in sets.items():
        try:
            values = label_metrics(x, y, cfg)
        except ValueError as e:
            out[f"{prefix}{name}/skipped"] = str(e).splitlines()[0]
            continue
        out.update({f"{prefix}{name}/{k}": v for k, v in values.items()})
    return out


def retrieval_metrics(shared: dict[str, np.ndarray], present: dict[str, np.ndarray]
                      ) -> dict[str, float]:
    """`eval/retrieval/<a>-><b>/R@1`: each held-out entity's `b` view found from its `a` view
    among the entities that have both, in the shared head (chance 1/n); the cross-modal
    retrieval of `raysys evaluate` (raysys.eval.measure.cross_modal)."""
    got = cross_modal(Spaces("held-out", embeddings=shared, present=present), ks=(1,))
    return {f"{PREFIX}{RETRIEVAL}/{pair}/R@1": float(r["R@1"])
            for pair, r in got.items() if "R@1" in r}


def relevance_metric(fused: np.ndarray, keep: np.ndarray, keys: list[str],
                     ratings: pd.DataFrame | None, k: int) -> dict[str, float]:
    """`eval/relevance/nDCG@k` of the graded ratings among held-out entities (fused space)."""
    if ratings is None:
        return {}
    got = graded_relevance(fused, keep, keys, ratings, k=k)
    name = f"nDCG@{k}"
    return {f"{PREFIX}{RELEVANCE}/{name}": float(got[name])} if name in got else {}


def metric_names(sets: list[str], modalities: list[str], cfg: EvaluationConfig,
                 graded: bool) -> list[str]:
    """Every metric name an evaluation of this archive can report (a sweep checks its
    `sweep.metric` against these before any trial starts)."""
    fused = [*sets, *([RANDOM] if cfg.random_control else [])]
    names = [f"{PREFIX}{s}/{m}" for s in fused for m in LABEL_METRICS]
    if len(modalities) > 1:
        names += [f"{PREFIX}{mod}/{s}/{m}" for mod in modalities for s in sets
                  for m in LABEL_METRICS]
        names += [f"{PREFIX}{RETRIEVAL}/{a}->{b}/R@1"
                  for a, b in itertools.permutations(modalities, 2)]
    if graded:
        names.append(f"{PREFIX}{RELEVANCE}/nDCG@{cfg.map_k}")
    return names


def evaluate_split(split: EmbeddedSplit, heads: dict[str, dict[str, np.ndarray]],
                   sets: dict[str, str], cfg: EvaluationConfig,
                   ratings: pd.DataFrame | None) -> dict[str, Any]:
    """Every in-training metric of one embedded held-out split: label sets in the fused
    shared-head space (+ random control), per modality in its invariant head (2+
    modalities), cross-modal R@1 and graded nDCG in the shared head."""
    fused, keep = split.fused()
    ys = {n: split.labels[c].to_numpy() for n, c in sets.items()}
    record = quick_metrics(fused[keep], {n: y[keep] for n, y in ys.items()}, cfg)
    if len(split.present) > 1:
        for m, x in heads[INVARIANT_HEAD].items():
            has = split.present[m]
            record.update(quick_metrics(x[has], {n: y[has] for n, y in ys.items()}, cfg,
                                        prefix=f"{PREFIX}{m}/", random_control=False))
        record.update(retrieval_metrics(split.embeddings, split.present))
    record.update(relevance_metric(fused, keep, split.keys, ratings, cfg.map_k))
    record[f"{PREFIX}entities"] = int(keep.sum())
    return record


class EvalWorker:
    """The actor body: decoded held-out batches in memory, one evaluation per request."""

    def __init__(self, model_cfg: dict[str, Any], inputs: ModelInputs, pipe: Pipeline,
                 eval_cfg: dict[str, Any]) -> None:
        self.model = MultiViewModel(ModelConfig.model_validate(model_cfg), inputs)
        self.cfg = EvaluationConfig.model_validate(eval_cfg)
        self.pipe = pipe
        self.batches: list[Any] | None = None

    def evaluate(self, step: int, state: dict[str, torch.Tensor]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            if self.batches is None:
                torch.set_num_threads(1)
                self.batches = decode_split(self.pipe, "eval", self.cfg.batch_size)
            self.model.load_state_dict(state)
            labels = self.pipe.entities.select("eval").labels(self.pipe.info)
            split, heads = embed_heads(self.model, self.batches, labels)
            relevance = self.pipe.info.relevance
            record = evaluate_split(split, heads, label_sets_of(self.cfg, labels), self.cfg,
                                    relevance.frame if relevance is not None else None)
        except Exception as e:  # an evaluation never takes the training run down
            record = {f"{PREFIX}error": f"{type(e).__name__}: {e}"}
        record[f"{PREFIX}seconds"] = time.perf_counter() - started
        return {"step": step, **record}


def snapshot(model: torch.nn.Module, zero_stage: int) -> dict[str, torch.Tensor]:
    """fp32 CPU copy of the model's weights. ZeRO 0-2: parameters are replicated (read
    locally). ZeRO-3: every rank must call this (the gather is a collective)."""

    def copy() -> dict[str, torch.Tensor]:
        return {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().clone()
                for k, v in model.state_dict().items()}

    if zero_stage < 3:
        return copy()
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None):
        return copy()


def logged_eval_steps(path: Path) -> set[int]:
    """Steps that already have an evaluation record in metrics.jsonl (resume: no repeats)."""
    if not path.exists():
        return set()
    steps = set()
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            if any(k.startswith(PREFIX) for k in record):
                steps.add(int(record["step"]))
    return steps


class InTrainingEval:
    """Hook of the training loop; `after_step(step)` on every rank, `finish()` at the end."""

    def __init__(self, trainer: Any, log: Any) -> None:
        self.every, self.wait = trainer.cfg.eval.every, trainer.cfg.eval.wait
        self.model, self.zero_stage = trainer.module.model, trainer.t.zero_stage
        self.rank, self.log = trainer.rank, log
        self.pending: dict[Any, int] = {}  # object ref -> step
        self.latest: dict[str, Any] = {}  # rank 0: the latest finished record + `eval/step`
        self.done: set[int] = set()  # a resumed point is evaluated again (the controller,
        self.actor = None  # which has metrics.jsonl, keeps one record per step)
        if self.every and self.rank == 0:
            import ray

            cfg = trainer.cfg
            actor = ray.remote(EvalWorker).options(
                num_cpus=cfg.eval.cpus, scheduling_strategy="DEFAULT")  # outside the workers' PG
            self.actor = actor.remote(cfg.model.model_dump(mode="json"), trainer.inputs,
                                      trainer.pipe, cfg.eval.model_dump(mode="json"))

    def after_step(self, step: int) -> None:
        """Launch the evaluation of `step` when due; rank 0 collects finished ones. Under
        ZeRO-3 every rank joins the gather at each due step (so no rank needs to know which
        steps rank 0 already has records of)."""
        if not self.every:
            return
        launch = self.rank == 0 and step % self.every == 0 and step not in self.done
        if launch or (self.zero_stage == 3 and step % self.every == 0):
            state = snapshot(self.model, self.zero_stage)
            if launch:
                import ray

                self.done.add(step)
                self.pending[self.actor.evaluate.remote(step, ray.put(state))] = step
        if self.rank == 0:
            self.collect(timeout=None if launch and self.wait else 0)

    def collect(self, timeout: float | None) -> None:
        """Log finished evaluations (timeout 0: never blocks; None: wait for all). A failed
        evaluation is logged as `eval/error`, never raised into the training loop."""
        import ray

        if not self.pending:
            return
        ready, _ = ray.wait(list(self.pending), num_returns=len(self.pending), timeout=timeout)
        records = []
        for ref in ready:
            step = self.pending.pop(ref)
            try:
                records.append(ray.get(ref))
            except Exception as e:  # e.g. the actor died
                records.append({"step": step, f"{PREFIX}error": f"{type(e).__name__}: {e}"})
        for record in sorted(records, key=lambda r: r["step"]):
            step = record.pop("step")
            self.log.log_eval(step, record)
            if f"{PREFIX}error" not in record:
                self.latest = {**record, f"{PREFIX}step": step}

    def finish(self) -> None:
        if self.rank == 0 and self.actor is not None:
            import ray

            self.collect(timeout=None)
            ray.kill(self.actor)
