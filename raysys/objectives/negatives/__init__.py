"""Large negative pools: cross-worker gather, embedding queue + momentum encoder, gradient caching.

Each piece composes with the losses of `raysys.losses` and runs without a process group
(world size 1). Config: `NegativesConfig` (`objective.negatives`).
"""

from raysys._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "NegativesConfig": "config",
    "all_gather_no_grad": "gather", "all_gather_with_grad": "gather", "rank": "gather",
    "world_size": "gather",
    "grad_cache_step": "gradcache",
    "EmbeddingQueue": "queue", "MomentumEncoder": "queue",
})
