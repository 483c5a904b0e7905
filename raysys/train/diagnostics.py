"""Held-out diagnostics of a pretrained model against its random initialisation.

    model, meta = load_model("RUN")
    trained = embed_split(model, pipe, "eval")
    baseline = embed_split(random_init_model(meta, seed=cfg.seed), pipe, "eval")
    report = compare_to_baseline(trained, baseline, relevance=pipe.info.relevance)

The split is streamed through the Ray Data pipeline with augmentation off and in plan order;
every present modality is embedded with the invariant head (view 0, L2-normalised). The
"fused" space is the mean of an entity's present modality embeddings. Diagnostics come from
`raysys.eval`: NCC accuracy on a seeded stratified train/test split of the split's entities,
CDNV (lower = better separated), kNN accuracy, few-shot prototype accuracy, cross-modal entity
retrieval (R@k: the same entity's other view) and graded-relevance nDCG where ratings exist.
A diagnostic that the data cannot support (too few entities per class) is reported as
`{"skipped": reason}`, never silently left out.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from raysys.data.pipeline import Pipeline, iter_hetero_batches
from raysys.eval import (
    cdnv,
    cosine_scores,
    few_shot,
    jsonable,
    knn_accuracy,
    ncc_accuracy,
    retrieval_report,
    split_indices,
)
from raysys.models.config import INVARIANT_HEAD, ModelConfig
from raysys.models.multimodal import ModelInputs, MultiViewModel

FUSED = "fused"


@dataclass
class EmbeddedSplit:
    """Embeddings of one split, row-aligned: N entities in plan order.

    embeddings: modality -> `[N, d]` invariant-head embeddings (L2-normalised; zeros where absent)
    present: modality -> bool `[N]`; backbone: modality -> `[N, D_m]` encoder features
    labels: the manifest's label columns (plus `key`), one row per entity
    """

    keys: list[str]
    entity_ids: np.ndarray
    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    backbone: dict[str, np.ndarray] = field(default_factory=dict)
    labels: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __len__(self) -> int:
        return len(self.keys)

    def fused(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean of the present modality embeddings `[N, d]`, any-modality-present `[N]`)."""
        stack = np.stack([self.embeddings[m] * self.present[m][:, None] for m in self.embeddings])
        count = np.stack([self.present[m] for m in self.embeddings]).sum(axis=0)
        return stack.sum(axis=0) / np.maximum(count, 1)[:, None], count > 0


def random_init_model(meta: dict[str, Any], seed: int) -> MultiViewModel:
    """The model an export started from: same config and inputs, `torch.manual_seed(seed)`
    right before construction (as the trainer does on every rank)."""
    inputs = meta["inputs"]
    inputs = ModelInputs(**{**inputs, "modalities": tuple(inputs["modalities"]),
                            "tabular_cardinalities": tuple(inputs["tabular_cardinalities"])})
    torch.manual_seed(seed)
    return MultiViewModel(ModelConfig.model_validate(meta["model"]), inputs).eval()


@torch.no_grad()
def _embed_batch(model: MultiViewModel, batch: Any, parts: dict[str, list]) -> None:
    for m in model.modalities:
        if m not in batch.views:
            continue
        backbone, heads = model.encode_modality(m, batch.views[m])
        parts.setdefault(f"emb.{m}", []).append(
            F.normalize(heads[INVARIANT_HEAD][:, 0].float(), dim=-1).numpy())
        parts.setdefault(f"backbone.{m}", []).append(backbone[:, 0].float().numpy())
        parts.setdefault(f"present.{m}", []).append(batch.views[m].present.bool().numpy())


def embed_split(model: MultiViewModel, pipe: Pipeline, split: str = "eval",
                batch_size: int = 64) -> EmbeddedSplit:
    """Embed every entity of `split` (augmentation off, plan order) with `model` on the CPU."""
    model = model.eval()
    ds = pipe.dataset(split, augment=False, shuffle=False)
    keys: list[str] = []
    ids: list[np.ndarray] = []
    parts: dict[str, list[np.ndarray]] = {}
    for batch in iter_hetero_batches(ds, batch_size):
        keys += batch.keys
        ids.append(batch.entity_id.numpy())
        _embed_batch(model, batch, parts)
    if not keys:
        raise ValueError(f"split {split!r} has no entities (data.eval_fraction too small?)")
    cat = lambda name: np.concatenate(parts[name])  # noqa: E731
    mods = [m for m in model.modalities if f"emb.{m}" in parts]
    labels = pipe.entities.select(split).labels(pipe.info).set_index("key").loc[keys]
    return EmbeddedSplit(
        keys=keys, entity_ids=np.concatenate(ids),
        embeddings={m: cat(f"emb.{m}") for m in mods},
        present={m: cat(f"present.{m}") for m in mods},
        backbone={m: cat(f"backbone.{m}") for m in mods},
        labels=labels.reset_index(),
    )


def _guard(fn, *args, **kwargs) -> Any:
    """Run one diagnostic; a data-size limitation becomes `{"skipped": reason}`."""
    try:
        return fn(*args, **kwargs)
    except ValueError as e:
        return {"skipped": str(e).splitlines()[0]}


def _few_shot(x: np.ndarray, y: np.ndarray, ways: int, shots: int, seed: int) -> Any:
    counts = np.sort(np.unique(y, return_counts=True)[1])[::-1]
    if counts.size < ways:
        return {"skipped": f"{counts.size} classes, {ways}-way needs {ways}"}
    queries = min(15, int(counts[ways - 1]) - shots)
    if queries < 1:
        return {"skipped": f"fewer than {ways} classes have more than {shots} samples"}
    out = few_shot(x, y, ways=ways, shots=shots, queries=queries, episodes=600, seed=seed,
                   skip_small_classes=True)
    return {**out, "queries": queries, "chance": 1.0 / ways}


def classification(x: np.ndarray, y: np.ndarray, *, seed: int = 0, test_fraction: float = 0.5,
                   ways: int = 5, shots: int = 5, knn_k: int = 10) -> dict[str, Any]:
    """NCC (test and train), CDNV, kNN and few-shot of one embedding space and label set."""
    y = np.asarray(y)
    out: dict[str, Any] = {"n": int(y.size), "classes": int(np.unique(y).size)}
    split = _guard(split_indices, y, test_fraction=test_fraction, seed=seed)
    if isinstance(split, dict):
        out.update(ncc_test=split, ncc_train=split, knn=split)
    else:
        tr, te = split
        out["ncc_test"] = ncc_accuracy(x[tr], y[tr], x[te], y[te])
        out["ncc_train"] = ncc_accuracy(x[tr], y[tr], x[tr], y[tr])
        out["knn"] = knn_accuracy(x[tr], y[tr], x[te], y[te], k=min(knn_k, tr.size))
    out["cdnv"] = _guard(cdnv, x, y, min_class_size=2)
    out[f"few_shot_{ways}way_{shots}shot"] = _guard(_few_shot, x, y, ways, shots, seed)
    return out


def cross_modal_retrieval(emb: EmbeddedSplit, ks: tuple[int, ...] = (1, 5)) -> dict[str, Any]:
    """For each ordered modality pair: find the same entity's other-modality embedding."""
    out: dict[str, Any] = {}
    for a, b in itertools.permutations(emb.embeddings, 2):
        both = emb.present[a] & emb.present[b]
        n = int(both.sum())
        if n < 2:
            out[f"{a}->{b}"] = {"skipped": f"{n} entities have both {a} and {b}"}
            continue
        scores = cosine_scores(emb.embeddings[a][both], emb.embeddings[b][both])
        report = retrieval_report(scores, positives=np.eye(n, dtype=bool), ks=ks, map_k=10)
        out[f"{a}->{b}"] = {**report, "n": n, "chance_R@1": 1.0 / n}
    return out


def relevance_retrieval(x: np.ndarray, keep: np.ndarray, keys: list[str],
                        ratings: pd.DataFrame, k: int = 10) -> dict[str, Any]:
    """nDCG@k of ranking each query's rated candidates (both in this split) by cosine."""
    index = {key: i for i, key in enumerate(keys) if keep[i]}
    rows = ratings[ratings["query"].isin(index) & ratings["candidate"].isin(index)]
    rows = rows[rows["query"] != rows["candidate"]]
    queries = sorted(set(rows["query"]), key=index.get)
    if not queries:
        return {"skipped": "no rated (query, candidate) pair lies within the split"}
    q_of = {q: i for i, q in enumerate(queries)}
    gains = np.zeros((len(queries), len(keys)))
    mask = np.zeros_like(gains, dtype=bool)
    qi = rows["query"].map(q_of).to_numpy()
    ci = rows["candidate"].map(index).to_numpy()
    gains[qi, ci] = rows["relevance"].to_numpy(dtype=float)
    mask[qi, ci] = True
    scores = cosine_scores(x[[index[q] for q in queries]], x)
    report = _guard(retrieval_report, scores, relevance=gains, mask=mask, map_k=k)
    return {**report, "queries": len(queries), "ratings": int(mask.sum())}


def diagnose(emb: EmbeddedSplit, *, label: str = "label", ratings: pd.DataFrame | None = None,
             seed: int = 0) -> dict[str, Any]:
    """Every diagnostic of one EmbeddedSplit: per space (fused, each modality, backbones)."""
    if label not in emb.labels.columns:
        raise ValueError(f"label column {label!r} not in the manifest labels "
                         f"{[c for c in emb.labels.columns if c != 'key']}")
    y = emb.labels[label].to_numpy()
    fused, any_present = emb.fused()
    spaces = {FUSED: (fused, any_present)}
    spaces.update({m: (emb.embeddings[m], emb.present[m]) for m in emb.embeddings})
    spaces.update({f"backbone.{m}": (emb.backbone[m], emb.present[m]) for m in emb.backbone})
    out: dict[str, Any] = {"spaces": {name: classification(x[keep], y[keep], seed=seed)
                                      for name, (x, keep) in spaces.items()}}
    out["cross_modal"] = cross_modal_retrieval(emb)
    if ratings is not None:
        out["relevance"] = relevance_retrieval(fused, any_present, emb.keys, ratings)
    return out


def compare_to_baseline(trained: EmbeddedSplit, baseline: EmbeddedSplit, *,
                        label: str = "label", ratings: pd.DataFrame | None = None,
                        seed: int = 0) -> dict[str, Any]:
    """Diagnostics of the trained and the random-init embeddings of the same entities."""
    if trained.keys != baseline.keys:
        raise ValueError("trained and baseline embeddings cover different entities")
    return jsonable({
        "entities": len(trained), "label": label,
        "trained": diagnose(trained, label=label, ratings=ratings, seed=seed),
        "random_init": diagnose(baseline, label=label, ratings=ratings, seed=seed),
    })


def headline(report: dict[str, Any], space: str = FUSED
             ) -> list[tuple[str, Any, Any, Any]]:
    """(name, trained, random-init, chance level or None) rows for a summary table: `space`'s
    NCC, CDNV, kNN and few-shot, each modality's own NCC, cross-modal R@1 per ordered pair and
    graded-relevance nDCG; a value is None where the diagnostic was skipped."""

    def pick(side: dict[str, Any], *path: str) -> Any:
        node: Any = side
        for p in path:
            node = node.get(p) if isinstance(node, dict) else None
        return node if isinstance(node, int | float) else None

    def chance_of(node: dict[str, Any]) -> float | None:
        classes = node.get("classes")
        return 1.0 / classes if classes else None

    t, r = report["trained"], report["random_init"]
    fused = t["spaces"][space]
    fs_key = next((k for k in fused if k.startswith("few_shot")), "few_shot")
    classes = fused.get("classes")
    rows = [
        (f"NCC accuracy ({space}, test)", ("spaces", space, "ncc_test"),
         1.0 / classes if classes else None),
        (f"CDNV ({space}, lower=better)", ("spaces", space, "cdnv"), None),
        (f"kNN accuracy ({space})", ("spaces", space, "knn"), None),
        (f"{fs_key.replace('few_shot_', '')} few-shot ({space})",
         ("spaces", space, fs_key, "mean"), pick(t, "spaces", space, fs_key, "chance")),
    ]
    modalities = [m for m in t["spaces"] if m != space and not m.startswith("backbone.")]
    rows += [(f"NCC accuracy ({m}, test)", ("spaces", m, "ncc_test"),
              chance_of(t["spaces"][m])) for m in modalities]
    rows += [(f"R@1 {pair}", ("cross_modal", pair, "R@1"),
              pick(t, "cross_modal", pair, "chance_R@1")) for pair in t["cross_modal"]]
    if "relevance" in t:
        rows.append(("nDCG@10 graded relevance", ("relevance", "nDCG@10"), None))
    return [(name, pick(t, *path), pick(r, *path), chance) for name, path, chance in rows]
