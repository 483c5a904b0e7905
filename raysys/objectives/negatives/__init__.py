"""Large negative pools: cross-worker gather, embedding queue + momentum encoder, gradient caching.

Each piece composes with the losses of `raysys.losses` and runs without a process group
(world size 1). Config: `NegativesConfig` (`objective.negatives`).
"""

from raysys.objectives.negatives.config import NegativesConfig
from raysys.objectives.negatives.gather import (
    all_gather_no_grad,
    all_gather_with_grad,
    rank,
    world_size,
)
from raysys.objectives.negatives.gradcache import grad_cache_step
from raysys.objectives.negatives.queue import EmbeddingQueue, MomentumEncoder

__all__ = [
    "EmbeddingQueue",
    "MomentumEncoder",
    "NegativesConfig",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "grad_cache_step",
    "rank",
    "world_size",
]
