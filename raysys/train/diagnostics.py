"""Shared pieces of the evaluations of a model: the random-init twin of an export, and the
embeddings of a decoded split (`EmbeddedSplit`, used by the in-training evaluation).

The full protocol (k-fold over every labelled entity, baselines) is `raysys evaluate`
(raysys/evaluate.py, raysys/eval/measure.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch

from raysys.eval.measure import fuse_mean
from raysys.models.config import ModelConfig
from raysys.models.multimodal import ModelInputs, MultiViewModel


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
        return fuse_mean(self.embeddings, self.present)


def random_init_model(meta: dict[str, Any], seed: int) -> MultiViewModel:
    """The model an export started from: same config and inputs, `torch.manual_seed(seed)`
    right before construction (as the trainer does on every rank)."""
    inputs = meta["inputs"]
    inputs = ModelInputs(**{**inputs, "modalities": tuple(inputs["modalities"]),
                            "tabular_cardinalities": tuple(inputs["tabular_cardinalities"])})
    torch.manual_seed(seed)
    return MultiViewModel(ModelConfig.model_validate(meta["model"]), inputs).eval()
