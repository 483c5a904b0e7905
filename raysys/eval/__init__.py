"""Evaluation and representation diagnostics: pure functions on numpy arrays (torch tensors
accepted), no Ray. See docs/evaluation.md for the definitions and conventions."""

from raysys._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "EvaluationConfig": "config",
    "jsonable": "measure", "retrieval_report": "retrieval",
    "cdnv": "clustering", "class_means": "clustering", "ncc_accuracy": "clustering",
    "random_labels": "clustering",
    "Episodes": "fewshot", "few_shot": "fewshot", "sample_episodes": "fewshot",
    "knn_accuracy": "neighbours", "neighbour_agreement": "neighbours",
    "neighbour_agreement_chance": "neighbours", "top_k_neighbours": "neighbours",
    "tempo_accuracy": "probes",
    "cosine_scores": "retrieval", "map_at_k": "retrieval", "ndcg_at_k": "retrieval",
    "recall_at_k": "retrieval",
    "subspace_probes": "subspace",
})
