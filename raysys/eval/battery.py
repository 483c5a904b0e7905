"""`evaluate_embeddings`: the full metric battery on one set of embeddings, as a JSON-able dict.

Meant to be called by the training hooks (per epoch / per N steps, per layer) and by
`raysys evaluate`; it only needs numpy arrays (or torch tensors), never Ray.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from raysys.eval._checks import ArrayLike, as_embeddings, as_labels, encode, to_numpy
from raysys.eval.clustering import cdnv, ncc_accuracy
from raysys.eval.config import EvalConfig
from raysys.eval.fewshot import few_shot
from raysys.eval.neighbours import knn_accuracy
from raysys.eval.probes import linear_probe, split_indices
from raysys.eval.retrieval import map_at_k, ndcg_at_k, recall_at_k
from raysys.eval.subspace import subspace_probes


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


def _few_shot_block(x: np.ndarray, y: np.ndarray, cfg: EvalConfig) -> dict[str, Any]:
    """Few-shot results keyed `"{W}way_{K}shot_{head}"`; a setting with too few eligible
    classes is reported as `{"skipped": reason}` rather than raising."""
    out: dict[str, Any] = {}
    counts = np.unique(y, return_counts=True)[1]
    for shots in cfg.few_shot_shots:
        need = shots + cfg.few_shot_queries
        eligible = int(np.sum(counts >= need))
        for head in cfg.few_shot_heads:
            key = f"{cfg.few_shot_ways}way_{shots}shot_{head}"
            if eligible < cfg.few_shot_ways:
                out[key] = {"skipped": f"{eligible} classes have >= shots+queries = {need} "
                                       f"samples, {cfg.few_shot_ways} needed"}
                continue
            out[key] = few_shot(
                x, y, ways=cfg.few_shot_ways, shots=shots, queries=cfg.few_shot_queries,
                episodes=cfg.few_shot_episodes, seed=cfg.seed, head=head,
                skip_small_classes=True,
            )
    return out


def _label_block(
    x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, cfg: EvalConfig
) -> dict[str, Any]:
    """Every classification diagnostic of one label set on a fixed split."""
    classes, idx = encode(y)
    return {
        "classes": int(classes.size),
        "majority": float(np.bincount(idx).max() / y.size),
        "ncc_train": ncc_accuracy(x[tr], y[tr], x[tr], y[tr]),
        "ncc_test": ncc_accuracy(x[tr], y[tr], x[te], y[te]),
        "cdnv": cdnv(x, y, min_class_size=1),
        "knn": knn_accuracy(x[tr], y[tr], x[te], y[te], k=min(cfg.knn_k, tr.size)),
        "linear_probe": linear_probe(x[tr], y[tr], x[te], y[te], C=cfg.probe_C),
        "few_shot": _few_shot_block(x, y, cfg),
    }


def _random_block(
    x: np.ndarray, y: np.ndarray, tr: np.ndarray, te: np.ndarray, seed: int
) -> dict[str, float]:
    """NCC/CDNV with labels permuted within each split (class sets and sizes kept)."""
    rng = np.random.default_rng(seed)
    y_tr, y_te = y[tr][rng.permutation(tr.size)], y[te][rng.permutation(te.size)]
    y_all = np.empty_like(y)
    y_all[tr], y_all[te] = y_tr, y_te
    return {
        "ncc_train": ncc_accuracy(x[tr], y_tr, x[tr], y_tr),
        "ncc_test": ncc_accuracy(x[tr], y_tr, x[te], y_te),
        "cdnv": cdnv(x, y_all, min_class_size=1),
    }


def retrieval_report(
    scores: ArrayLike,
    positives: ArrayLike | None = None,
    relevance: ArrayLike | None = None,
    mask: ArrayLike | None = None,
    *,
    ks: tuple[int, ...] | list[int] = (1, 5, 10),
    map_k: int = 10,
) -> dict[str, float]:
    """`R@k` for each k and `mAP@{map_k}` (binary positives), `nDCG@{map_k}` (graded)."""
    if positives is None and relevance is None:
        raise ValueError("retrieval_report needs positives, relevance, or both")
    out: dict[str, float] = {}
    if positives is not None:
        out.update({f"R@{k}": recall_at_k(scores, positives, k, mask=mask) for k in ks})
        out[f"mAP@{map_k}"] = map_at_k(scores, positives, map_k, mask=mask)
    if relevance is not None:
        out[f"nDCG@{map_k}"] = ndcg_at_k(scores, relevance, map_k, mask=mask)
    return out


def evaluate_embeddings(
    embeddings: ArrayLike,
    labels: Mapping[str, ArrayLike],
    *,
    config: EvalConfig | None = None,
    train_mask: ArrayLike | None = None,
    subspaces: Mapping[str, ArrayLike] | None = None,
    factors: Mapping[str, ArrayLike] | None = None,
    retrieval: Mapping[str, ArrayLike] | None = None,
) -> dict[str, Any]:
    """Run the battery; returns a JSON-able dict (non-finite values as None).

    `labels`: label sets by name (e.g. `{"sample": ids, "fine": y, "coarse": z}`); for each:
    NCC train/test, CDNV, kNN, linear probe, few-shot, and (if `config.random_control`) the
    random-label control under `"<name>/random"`. The split is `train_mask` (True = train) or
    a seeded split stratified by the first label set. `subspaces` + `factors` add the
    `subspace_probes` table; `retrieval` (keys of `retrieval_report`) adds retrieval metrics.
    Shapes: embeddings `[N, D]`, every label set `[N]`.
    """
    cfg = config or EvalConfig()
    x = as_embeddings(embeddings, "embeddings")
    if not labels:
        raise ValueError("labels must name at least one label set")
    sets = {name: as_labels(v, x.shape[0], f"labels[{name!r}]") for name, v in labels.items()}
    first = next(iter(sets))
    if train_mask is None:
        tr, te = split_indices(sets[first], test_fraction=cfg.test_fraction, seed=cfg.seed)
    else:
        m = as_labels(to_numpy(train_mask).astype(bool), x.shape[0], "train_mask")
        tr, te = np.flatnonzero(m), np.flatnonzero(~m)
    report: dict[str, Any] = {
        "n": int(x.shape[0]), "dim": int(x.shape[1]),
        "split": {"train": int(tr.size), "test": int(te.size),
                  "by": "train_mask" if train_mask is not None else first},
        "labels": {},
    }
    for name, y in sets.items():
        report["labels"][name] = _label_block(x, y, tr, te, cfg)
        if cfg.random_control:
            report["labels"][f"{name}/random"] = _random_block(x, y, tr, te, cfg.seed)
    if subspaces is not None or factors is not None:
        report["subspace_probes"] = subspace_probes(
            subspaces or {}, factors or {}, test_fraction=cfg.test_fraction, seed=cfg.seed,
            k=cfg.neighbours_k, C=cfg.probe_C,
        )
    if retrieval is not None:
        report["retrieval"] = retrieval_report(**retrieval, ks=cfg.retrieval_ks, map_k=cfg.map_k)
    return jsonable(report)
