"""Typed config of the composed objective (`objective.*`).

    total = w_bin * binary + w_cont * continuous + w_loev * loev + w_cola * cola

A term whose weight is 0 (or that is switched off) is not computed. See docs/objectives.md.
"""

from __future__ import annotations

import math
from typing import Literal, get_args

from pydantic import Field, field_validator, model_validator

from raysys.config_base import Section
from raysys.data.config import Modality
from raysys.objectives.negatives.config import NegativesConfig

MODALITY_NAMES = get_args(Modality)


def pair_key(a: str, b: str) -> str:
    """Order-free name of a modality pair: `pair_key("image", "audio") == "audio-image"`."""
    return "-".join(sorted((a, b)))


class LoevConfig(Section):
    """LOEV heads: the all-invariant head plus one head per tracked augmentation."""

    enabled: bool = Field(False, description="add the LOEV multi-positive head losses")
    augmentations: list[str] = Field(
        default_factory=list, description="tracked augmentations; each needs a model head"
    )
    weights: dict[str, float] = Field(
        default_factory=dict,
        description="head -> weight ('invariant' or a tracked augmentation; missing = 1); "
        "loev = weighted mean over heads",
    )
    temperature: float = Field(0.1, gt=0, description="cosine-score temperature (paper: 0.1)")

    @model_validator(mode="after")
    def _check(self) -> LoevConfig:
        if len(set(self.augmentations)) != len(self.augmentations):
            raise ValueError(f"augmentations has duplicates: {self.augmentations}")
        if "invariant" in self.augmentations:
            raise ValueError("augmentations: 'invariant' names the invariant head")
        heads = {"invariant", *self.augmentations}
        for name, w in self.weights.items():
            if name not in heads:
                raise ValueError(f"weights: unknown head {name!r} (heads: {sorted(heads)})")
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"weights[{name!r}] must be finite and >= 0 (got {w})")
        if self.weights and sum(self.weight(h) for h in heads) == 0:
            raise ValueError("weights: at least one head needs a weight > 0")
        return self

    def head_names(self) -> list[str]:
        return ["invariant", *self.augmentations]

    def weight(self, head: str) -> float:
        return self.weights.get(head, 1.0)


class ObjectiveConfig(Section):
    """Weights, modes and heads of the composed contrastive objective."""

    mode: Literal["all_pairs", "anchor"] = Field(
        "all_pairs", description="view pairs: every pair, or only pairs with an anchor view"
    )
    anchor_modality: Modality = Field("audio", description="anchor mode: the anchor modality")
    pair_weights: dict[str, float] = Field(
        default_factory=dict,
        description="'audio-image' -> weight (order-free; 'audio-audio' = two audio views); "
        "missing pairs weigh 1, 0 drops a pair",
    )
    w_bin: float = Field(1.0, ge=0, description="weight of the multi-view binary InfoNCE")
    w_cont: float = Field(0.0, ge=0, description="weight of the ListNet graded-relevance term")
    w_loev: float = Field(1.0, ge=0, description="weight of the LOEV head mean (when enabled)")
    w_cola: float = Field(1.0, ge=0, description="weight of the COLA bilinear term (when on)")
    temperature: float = Field(0.07, gt=0, description="τ of binary and relevance scores")
    learnable_temperature: bool = Field(False, description="learn log τ (clamped, CLIP style)")
    temperature_min: float = Field(0.01, gt=0, description="clamp of a learnable τ (CLIP: 0.01)")
    temperature_max: float = Field(1.0, gt=0, description="clamp of a learnable τ")
    listnet_target_temperature: float = Field(
        0.1, gt=0, description="τ_r of the ListNet targets softmax((r / 100) / τ_r)"
    )
    neighbour_positives: int = Field(
        0, ge=0,
        description="binary term: the k pooled entities nearest each query (other than its own) "
        "count as positives too (false-negative attraction); 0 = off",
    )  # fmt: skip
    neighbour_weight: float = Field(
        1.0, gt=0, description="target weight of a neighbour positive (own views weigh 1)"
    )
    loev: LoevConfig = Field(default_factory=LoevConfig)
    cola: bool = Field(False, description="COLA bilinear term S = E_a W E_bᵀ (needs model.cola)")
    negatives: NegativesConfig = Field(default_factory=NegativesConfig)

    @field_validator("pair_weights")
    @classmethod
    def _check_pairs(cls, weights: dict[str, float]) -> dict[str, float]:
        seen: dict[str, str] = {}
        for key, w in weights.items():
            parts = key.split("-")
            if len(parts) != 2 or any(p not in MODALITY_NAMES for p in parts):
                raise ValueError(
                    f"{key!r} is not 'modality-modality' with modalities in {MODALITY_NAMES}"
                )
            canon = pair_key(*parts)
            if canon in seen:
                raise ValueError(f"{key!r} and {seen[canon]!r} name the same pair")
            seen[canon] = key
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"{key!r}: weight must be finite and >= 0 (got {w})")
        return {pair_key(*k.split("-")): w for k, w in weights.items()}

    @model_validator(mode="after")
    def _check(self) -> ObjectiveConfig:
        enabled = [self.w_bin, self.w_cont, self.w_loev * self.loev.enabled,
                   self.w_cola * self.cola]  # fmt: skip
        if not any(w > 0 for w in enabled):
            raise ValueError("no term enabled: set w_bin, w_cont, loev.enabled or cola")
        if self.temperature_min > self.temperature_max:
            raise ValueError(
                f"temperature_min ({self.temperature_min}) > temperature_max "
                f"({self.temperature_max})"
            )
        if self.learnable_temperature and not (
            self.temperature_min <= self.temperature <= self.temperature_max
        ):
            raise ValueError(
                f"temperature {self.temperature} lies outside "
                f"[temperature_min, temperature_max] = "
                f"[{self.temperature_min}, {self.temperature_max}]"
            )
        return self

    def pair_weight(self, a: str, b: str) -> float:
        return self.pair_weights.get(pair_key(a, b), 1.0)
