"""Public loss API of raysys (see docs/losses.md).

from raysys.losses import info_nce, listnet, soft_target_cross_entropy, IdTargets
"""

from raysys.objectives.chunked import chunked_soft_target_ce
from raysys.objectives.losses import (
    bilinear_scores,
    info_nce,
    listnet,
    soft_target_cross_entropy,
)
from raysys.objectives.targets import (
    DenseTargets,
    IdTargets,
    Targets,
    loev_id_targets,
    loev_ids,
    loev_positive_masks,
)

__all__ = [
    "DenseTargets",
    "IdTargets",
    "Targets",
    "bilinear_scores",
    "chunked_soft_target_ce",
    "info_nce",
    "listnet",
    "loev_id_targets",
    "loev_ids",
    "loev_positive_masks",
    "soft_target_cross_entropy",
]
