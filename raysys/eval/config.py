"""Typed config of evaluation in a run (`eval.*`): the battery's knobs (`EvalConfig`) plus
where evaluation runs (every N training steps) and which manifest columns it reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from raysys.eval.battery import EvalConfig

FactorKind = Literal["categorical", "continuous", "tempo"]


class EvaluationConfig(EvalConfig):
    """`eval.*`: in-training evaluation and `raysys evaluate`.

    `label_sets` / `factors` map a display name to a manifest column (`label`, `label_*`).
    The first label set is the "fine" one: it stratifies the split, and the in-training
    random-label control permutes it.
    """

    every: int = Field(0, ge=0, description="in-training evaluation every N optimizer steps "
                                             "(and at the start: the random-init point); 0 = off")
    cpus: float = Field(
        0.0, ge=0, description="logical CPUs reserved by the in-training evaluation actor "
        "(0 on 2 cores: Ray Data needs a whole free CPU beside training; see docs/evaluation.md)",
    )
    batch_size: int = Field(64, ge=1, description="entities per embedding batch")
    label_sets: dict[str, str] = Field(
        default_factory=lambda: {"fine": "label", "coarse": "label_coarse"}, min_length=1,
        description="name -> manifest label column; the first one is the fine label set",
    )
    factors: dict[str, str] = Field(
        default_factory=lambda: {"pitch": "label_pitch", "tempo": "label_tempo"},
        description="subspace-probe factors: name -> manifest label column ({} = no probes)",
    )
    factor_kinds: dict[str, FactorKind] = Field(
        default_factory=lambda: {"tempo": "tempo"},
        description="probe kind per factor name (default: categorical for ints/strings)",
    )
    probe_modality: Literal["audio", "image", "tabular"] = Field(
        "audio", description="modality whose backbone and heads the subspace probes compare"
    )
    projection: Literal["pca", "tsne"] = Field("pca", description="2-D projection of the report")
    few_shot_shots: list[int] = Field(
        default_factory=lambda: [1, 5, 10, 20], description="K values of the few-shot curve"
    )

    @field_validator("label_sets", "factors")
    @classmethod
    def _check_columns(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [c for c in value.values() if c != "label" and not c.startswith("label_")]
        if bad:
            raise ValueError(f"{bad}: label columns are named 'label' or 'label_*'")
        return value

    @field_validator("few_shot_shots")
    @classmethod
    def _check_shots(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError(f"every K must be >= 1 (got {value})")
        return value
