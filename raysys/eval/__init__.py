"""Evaluation and representation diagnostics: pure functions on numpy arrays (torch tensors
accepted), no Ray. See docs/evaluation.md for the definitions and conventions."""

from raysys.eval.battery import EvalConfig, evaluate_embeddings, jsonable, retrieval_report
from raysys.eval.clustering import cdnv, class_means, ncc_accuracy, random_labels
from raysys.eval.fewshot import Episodes, few_shot, sample_episodes
from raysys.eval.neighbours import (
    knn_accuracy,
    neighbour_agreement,
    neighbour_agreement_chance,
    top_k_neighbours,
)
from raysys.eval.probes import linear_probe, split_indices, tempo_accuracy, tempo_probe
from raysys.eval.retrieval import cosine_scores, map_at_k, ndcg_at_k, recall_at_k
from raysys.eval.subspace import format_table, subspace_probes

__all__ = [
    "EvalConfig",
    "Episodes",
    "cdnv",
    "class_means",
    "cosine_scores",
    "evaluate_embeddings",
    "few_shot",
    "format_table",
    "jsonable",
    "knn_accuracy",
    "linear_probe",
    "map_at_k",
    "ncc_accuracy",
    "ndcg_at_k",
    "neighbour_agreement",
    "neighbour_agreement_chance",
    "random_labels",
    "recall_at_k",
    "retrieval_report",
    "sample_episodes",
    "split_indices",
    "subspace_probes",
    "tempo_accuracy",
    "tempo_probe",
    "top_k_neighbours",
]
