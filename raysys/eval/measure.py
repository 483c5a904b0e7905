"""Every metric of one set of embedding spaces (a model, or a baseline), on the k-fold protocol.

`Spaces` holds, row-aligned with the evaluated entities, each modality's embedding (zeros
where the modality is absent), the presence masks, the "fused" space and, per modality, the
probe spaces (backbone and each head). `measure` returns a JSON-able dict:

    {"spaces": {space: {"entities": n, "labels": {set: kfold result}, "few_shot": {set: curve},
                        "labels_per_class": {set: {"by_k": ...}}}},
     "probes": [{"modality", "space", "factor", "kind", ...}],
     "retrieval": {"cross_modal": {"a->b": {...}}, "relevance": {...},
                   "relevance_by_modality": {modality: {...}}},
     "depth": {modality: {layer: {set: {"ncc", "chance", "cdnv"}}}}}

Graded relevance ranks in the fused space and, with several modalities, in each modality's
own space too (a fused space mixes in views that may not carry what the ratings reward).
A metric the data cannot support (a single class, too few samples) is `{"skipped": reason}`.
No Ray here.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from raysys.eval._checks import guarded
from raysys.eval.clustering import cdnv, random_labels
from raysys.eval.config import EvaluationConfig
from raysys.eval.fewshot import few_shot
from raysys.eval.probes import TEMPO_TOLERANCE
from raysys.eval.protocol import (
    FactorKind,
    kfold_classification,
    labels_per_class_classification,
)
from raysys.eval.retrieval import cosine_scores, retrieval_report
from raysys.eval.subspace import probe_row

FUSED = "fused"


def jsonable(obj: Any) -> Any:
    """Python scalars/lists/dicts only; non-finite floats become None (strict JSON)."""
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


@dataclass
class Spaces:
    """Embeddings of the evaluated entities by one model or baseline.

    embeddings: space -> `[N, d]` (every modality, plus FUSED); present: space -> bool `[N]`;
    probe_spaces: modality -> {"backbone" | head name: `[N, d]`}; comparable: whether the
    modalities share one space (cross-modal retrieval and the mean fusion make sense);
    retrieval: modality -> `[N, d]` that cross-modal retrieval ranks in when it is not
    `embeddings` (a model's `cross` head); layers: modality -> {"layer1" ...: `[N, C]`}, the
    encoder's trunk layers (pooled), shallowest first.
    """

    name: str
    embeddings: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    probe_spaces: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    comparable: bool = True
    retrieval: dict[str, np.ndarray] | None = None
    layers: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def modalities(self) -> list[str]:
        return [s for s in self.embeddings if s != FUSED]


def fuse_mean(embeddings: dict[str, np.ndarray], present: dict[str, np.ndarray]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Mean of each entity's present modality embeddings, and any-modality-present."""
    stack = np.stack([embeddings[m] * present[m][:, None] for m in embeddings])
    count = np.stack([present[m] for m in embeddings]).sum(axis=0)
    return stack.sum(axis=0) / np.maximum(count, 1)[:, None], count > 0


def fuse_concat(embeddings: dict[str, np.ndarray], present: dict[str, np.ndarray]
                ) -> tuple[np.ndarray, np.ndarray]:
    """Concatenation of the z-scored modality features (zeros where absent): the fusion of
    features that live in different spaces (the classic baseline)."""
    parts = []
    for m, x in embeddings.items():
        keep = present[m]
        z = np.zeros_like(x, dtype=np.float32)
        if keep.any():
            mu, sd = x[keep].mean(0), x[keep].std(0) + 1e-6
            z[keep] = (x[keep] - mu) / sd
        parts.append(z)
    count = np.stack(list(present.values())).sum(axis=0)
    return np.concatenate(parts, axis=1), count > 0


def few_shot_curve(x: np.ndarray, y: np.ndarray, cfg: EvaluationConfig) -> dict[str, Any]:
    """Prototype accuracy against K (`eval.few_shot_shots`) on z-scored, L2-normalised
    features, episodes drawn from every labelled entity: W = min(few_shot_ways, classes);
    queries = min(few_shot_queries, n_W - K) with n_W the W-th largest class size."""
    counts = np.sort(np.unique(y, return_counts=True)[1])[::-1]
    ways = int(min(cfg.few_shot_ways, counts.size))
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)  # uses no labels
    out: dict[str, Any] = {"ways": ways, "chance": 1.0 / max(ways, 1), "by_k": {}}
    for k in cfg.few_shot_shots:
        queries = min(cfg.few_shot_queries, int(counts[ways - 1]) - k) if ways >= 2 else 0
        if queries < 1:
            out["by_k"][str(k)] = {"skipped": f"fewer than {max(ways, 2)} classes have more "
                                              f"than K={k} samples"}
            continue
        res = few_shot(z, y, ways=ways, shots=k, queries=queries,
                       episodes=cfg.few_shot_episodes, seed=cfg.seed, head="prototype",
                       skip_small_classes=True)
        out["by_k"][str(k)] = {**res, "queries": queries}
    return out


def too_few_per_class(y: np.ndarray) -> str | None:
    """Why a label set is skipped: more classes than a third of its entities; else None."""
    classes = np.unique(y).size
    if classes > max(2, len(y) // 3):
        return (f"{classes} classes among {len(y)} entities: too few samples per class for "
                "k-fold or episodes")
    return None


def _labelled(frame: pd.DataFrame, column: str, keep: np.ndarray) -> np.ndarray:
    return keep & frame[column].notna().to_numpy()


def measure_space(x: np.ndarray, keep: np.ndarray, labels: pd.DataFrame,
                  label_sets: dict[str, str], cfg: EvaluationConfig) -> dict[str, Any]:
    """k-fold classification, the few-shot curve and the label-budget probe of one space,
    per label set."""
    out: dict[str, Any] = {"entities": int(keep.sum()), "labels": {}, "few_shot": {},
                           "labels_per_class": {}}
    for name, column in label_sets.items():
        rows = _labelled(labels, column, keep)
        y = labels[column].to_numpy()[rows]
        reason = too_few_per_class(y)
        if reason:
            for part in ("labels", "few_shot", "labels_per_class"):
                out[part][name] = {"skipped": reason}
            continue
        out["labels"][name] = guarded(kfold_classification, x[rows], y, folds=cfg.folds,
                                      seed=cfg.seed, C=cfg.probe_C, knn_k=cfg.knn_k)
        out["few_shot"][name] = guarded(few_shot_curve, x[rows], y, cfg)
        if cfg.labels_per_class:
            out["labels_per_class"][name] = guarded(
                labels_per_class_classification, x[rows], y, budgets=cfg.labels_per_class,
                draws=cfg.label_draws, seed=cfg.seed, C=cfg.probe_C, knn_k=cfg.knn_k)
    return out


RANDOM_LABELS = "random"  # the depth table's random-label control: the main label permuted
DEPTH_AFTER_LAYERS = ("backbone", "invariant")  # probe spaces deeper than the trunk layers


def depth_clustering(spaces: Spaces, labels: pd.DataFrame, label_sets: dict[str, str],
                     cfg: EvaluationConfig) -> dict[str, Any]:
    """Per modality, shallowest first (the trunk layers, the backbone, the invariant head):
    per label set and the random-label control, the k-fold nearest-centre accuracy and the
    CDNV (lower = tighter classes). How class structure grows with depth."""
    out: dict[str, Any] = {}
    for modality, layers in spaces.layers.items():
        keep = spaces.present[modality]
        probe = spaces.probe_spaces.get(modality, {})
        depth = {**layers, **{k: probe[k] for k in DEPTH_AFTER_LAYERS if k in probe}}
        columns = {name: labels[column].to_numpy() for name, column in label_sets.items()}
        main = next(iter(columns.values()))
        labelled = keep & pd.notna(main)
        control = np.full(len(main), None, dtype=object)
        control[labelled] = random_labels(main[labelled], cfg.seed)
        columns[RANDOM_LABELS] = control
        out[modality] = {}
        for space, x in depth.items():
            row: dict[str, Any] = {}
            for name, y in columns.items():
                rows = keep & pd.notna(y)
                yy = np.asarray(y[rows].tolist())
                reason = too_few_per_class(yy)
                if reason:
                    row[name] = {"skipped": reason}
                    continue
                got = guarded(kfold_classification, x[rows], yy, folds=cfg.folds,
                              seed=cfg.seed, classifiers=("ncc",))
                row[name] = ({"ncc": got["ncc"], "chance": got["chance"],
                              "cdnv": guarded(cdnv, x[rows], yy, min_class_size=1)}
                             if "ncc" in got else got)
            out[modality][space] = row
    return out


def factor_probes(spaces: Spaces, labels: pd.DataFrame, factors: dict[str, str],
                  kinds: dict[str, FactorKind], cfg: EvaluationConfig) -> list[dict[str, Any]]:
    """Per modality, per probe space (backbone, each branch and head), per factor: the
    subspace probe (raysys.eval.subspace.probe_row: k-fold logistic accuracy or ridge R^2,
    neighbour agreement against chance) on the entities with the modality and the factor.
    A categorical factor with too few samples per class is skipped as its label set is (the
    music corpus's melody: 204 classes among ~500 entities, probes at chance that took 40 %
    of an evaluation)."""
    rows: list[dict[str, Any]] = []
    for modality, probe_spaces in spaces.probe_spaces.items():
        keep = spaces.present[modality]
        for factor, column in factors.items():
            sel = _labelled(labels, column, keep)
            y = labels[column].to_numpy()[sel]
            kind = kinds.get(factor, "categorical")
            reason = too_few_per_class(y) if kind == "categorical" else None
            rows += [{"modality": modality, "space": space, "factor": factor, "kind": kind,
                      **({"skipped": reason} if reason else
                         probe_row(x[sel], y, kind, folds=cfg.folds, seed=cfg.seed,
                                   C=cfg.probe_C, k=cfg.agreement_k, rel_tol=TEMPO_TOLERANCE))}
                     for space, x in probe_spaces.items()]
    return rows


def cross_modal(spaces: Spaces, ks: tuple[int, ...]) -> dict[str, Any]:
    """For each ordered modality pair: find the same entity's other-modality embedding among
    every entity that has both (R@k, mAP@10; chance R@k = k / n)."""
    out: dict[str, Any] = {}
    if not spaces.comparable:
        return {"skipped": f"{spaces.name}: the modalities do not share one space"}
    emb = spaces.retrieval or spaces.embeddings
    for a, b in itertools.permutations(spaces.modalities, 2):
        both = spaces.present[a] & spaces.present[b]
        n = int(both.sum())
        if n < 2:
            out[f"{a}->{b}"] = {"skipped": f"{n} entities have both {a} and {b}"}
            continue
        scores = cosine_scores(emb[a][both], emb[b][both])
        report = retrieval_report(scores, positives=np.eye(n, dtype=bool), ks=ks, map_k=10)
        out[f"{a}->{b}"] = {**report, "n": n, **{f"chance_R@{k}": min(1.0, k / n) for k in ks}}
    return out


RELEVANT_RATING = 50.0  # binary positive: at least half of the rated attributes' weight shared


def graded_relevance(x: np.ndarray, keep: np.ndarray, keys: list[str], ratings: pd.DataFrame,
                     k: int = 10, queries: set[str] | None = None,
                     ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, Any]:
    """Rank each query's rated candidates by cosine in `x`: nDCG@k on the ratings, and R@ks /
    mAP@k with the candidates rated >= RELEVANT_RATING as positives. `queries`: only these
    (e.g. the entities held out of training, whose ratings the objective never saw)."""
    index = {key: i for i, key in enumerate(keys) if keep[i]}
    rows = ratings[ratings["query"].isin(index) & ratings["candidate"].isin(index)]
    rows = rows[rows["query"] != rows["candidate"]]
    if queries is not None:
        rows = rows[rows["query"].isin(queries)]
    chosen = sorted(set(rows["query"]), key=index.get)
    if not chosen:
        return {"skipped": "no rated (query, candidate) pair among the evaluated entities"}
    q_of = {q: i for i, q in enumerate(chosen)}
    gains = np.zeros((len(chosen), len(keys)))
    mask = np.zeros_like(gains, dtype=bool)
    qi, ci = rows["query"].map(q_of).to_numpy(), rows["candidate"].map(index).to_numpy()
    gains[qi, ci] = rows["relevance"].to_numpy(dtype=float)
    mask[qi, ci] = True
    scores = cosine_scores(x[[index[q] for q in chosen]], x)
    report = guarded(retrieval_report, scores, relevance=gains, mask=mask, map_k=k)
    positives = gains >= RELEVANT_RATING
    with_positive = positives.any(axis=1)
    if with_positive.any():
        binary = guarded(retrieval_report, scores[with_positive], positives[with_positive],
                         mask=mask[with_positive], ks=ks, map_k=k)
        report.update({name: v for name, v in binary.items() if name != "skipped"})
    return {**report, "queries": len(chosen), "ratings": int(mask.sum()),
            "queries_with_positive": int(with_positive.sum()),
            "held_out": queries is not None}


def same_space(spaces: Spaces, space: str, measured: list[str]) -> str | None:
    """A measured space equal to `space` in every value and presence (with one modality the
    mean fusion is that modality's embedding): its results stand for `space`'s."""
    x, keep = spaces.embeddings[space], spaces.present[space]
    return next((s for s in measured if np.array_equal(spaces.embeddings[s], x)
                 and np.array_equal(spaces.present[s], keep)), None)


def measure(spaces: Spaces, labels: pd.DataFrame, keys: list[str], *,
            label_sets: dict[str, str], factors: dict[str, str],
            kinds: dict[str, FactorKind], cfg: EvaluationConfig,
            ratings: pd.DataFrame | None = None,
            rating_queries: set[str] | None = None) -> dict[str, Any]:
    """Every metric of one model or baseline (see the module doc); graded relevance over
    `rating_queries` only when given."""
    out: dict[str, Any] = {"spaces": {}}
    for space, x in spaces.embeddings.items():
        twin = same_space(spaces, space, list(out["spaces"]))
        out["spaces"][space] = (out["spaces"][twin] if twin is not None else
                                measure_space(x, spaces.present[space], labels, label_sets, cfg))
    out["probes"] = factor_probes(spaces, labels, factors, kinds, cfg)
    out["depth"] = depth_clustering(spaces, labels, label_sets, cfg)
    out["retrieval"] = {"cross_modal": cross_modal(spaces, tuple(cfg.retrieval_ks))}
    if ratings is not None:
        out["retrieval"].update(relevance_by_space(spaces, keys, ratings, cfg, rating_queries))
    return jsonable(out)


def relevance_by_space(spaces: Spaces, keys: list[str], ratings: pd.DataFrame,
                       cfg: EvaluationConfig, queries: set[str] | None) -> dict[str, Any]:
    """Graded relevance in the fused space (`relevance`) and, when there are several
    modalities, in each one's own embedding (`relevance_by_modality`)."""
    def rank_in(space: str) -> dict[str, Any]:
        return graded_relevance(spaces.embeddings[space], spaces.present[space], keys, ratings,
                                k=cfg.map_k, queries=queries, ks=tuple(cfg.retrieval_ks))

    out: dict[str, Any] = {"relevance": rank_in(FUSED)}
    if len(spaces.modalities) > 1:
        out["relevance_by_modality"] = {m: rank_in(m) for m in spaces.modalities}
    return out
