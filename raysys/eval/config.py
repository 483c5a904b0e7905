"""Typed config of evaluation (`eval.*`): the metrics' knobs, where evaluation runs (every N
training steps) and which manifest columns it reads."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from raysys.config_base import Section

FactorKind = Literal["categorical", "continuous", "tempo"]


class EvaluationConfig(Section):
    """`eval.*`: in-training evaluation and `raysys evaluate`.

    `label_sets` / `factors` map a display name to a manifest column (`label`, `label_*`);
    left at None they are discovered from the manifest (`raysys.eval.protocol.resolve_labels`).
    The first label set is the main ("fine") one: the random-label control permutes it.
    """

    seed: int = Field(0, description="seed of the folds, the random labels and the episodes")
    knn_k: int = Field(20, ge=1, description="neighbours of the kNN classifier")
    agreement_k: int = Field(10, ge=1, description="neighbours of the factor probes' "
                             "neighbour agreement (do a space's neighbours share the factor?)")
    probe_C: float = Field(1.0, gt=0, description="inverse L2 strength of the logistic probe")
    random_control: bool = Field(True, description="also report NCC/CDNV on permuted labels")
    few_shot_ways: int = Field(5, ge=2, description="N of N-way K-shot")
    few_shot_queries: int = Field(15, ge=1, description="queries per class and episode")
    few_shot_episodes: int = Field(600, ge=1, description="episodes per K")
    retrieval_ks: list[int] = Field(default_factory=lambda: [1, 5, 10], description="R@k")
    map_k: int = Field(10, ge=1, description="k of mAP@k and nDCG@k")

    every: int = Field(0, ge=0, description="in-training evaluation every N optimizer steps "
                                             "(and at the start: the random-init point); 0 = off")
    cpus: float = Field(
        0.0, ge=0, description="logical CPUs reserved by the in-training evaluation actor "
        "(0 on 2 cores: Ray Data needs a whole free CPU beside training; see docs/evaluation.md)",
    )
    wait: bool = Field(
        False, description="training waits for each in-training evaluation before its next "
        "step: every report then carries the evaluation of the step just evaluated, so ASHA "
        "judges a trial at its rung exactly, whatever the machine's load (costs the "
        "evaluation's time at every eval.every)",
    )
    batch_size: int = Field(64, ge=1, description="entities per embedding batch")
    label_sets: dict[str, str] | None = Field(
        None, description="name -> categorical manifest label column; the first one is the "
        "main (fine) label set; None = discover every categorical `label`/`label_*` column",
    )
    factors: dict[str, str] | None = Field(
        None, description="subspace-probe factors: name -> manifest label column ({} = no "
        "probes; None = every label column)",
    )
    factor_kinds: dict[str, FactorKind] = Field(
        default_factory=dict,
        description="probe kind per factor name (default: floats continuous, tempo/bpm "
        "columns tempo, the rest categorical)",
    )
    folds: int = Field(5, ge=2, description="k of the stratified k-fold protocol of "
                                             "`raysys evaluate`")
    classic: bool = Field(True, description="also evaluate the classic hand-crafted features "
                                            "(MFCC/log-mel stats, thumbnails, log statistics)")
    sensitivity_clips: int = Field(
        100, ge=0, description="audio clips whose heads `raysys evaluate` re-embeds time-"
        "stretched and pitch-shifted (how far each head moves; docs/evaluation.md); 0 = off",
    )
    projection: Literal["pca", "tsne"] = Field("pca", description="2-D projection of the report")
    labels_per_class: list[int] = Field(
        default_factory=lambda: [5, 10, 20], description="K values of the label-budget "
        "probe: logistic and nearest-centre classifiers fitted on K labelled entities per "
        "class, tested on all the others ([] = off)",
    )
    label_draws: int = Field(10, ge=1, description="random draws of the labelled entities "
                             "per K of the label-budget probe")
    few_shot_shots: list[int] = Field(
        default_factory=lambda: [1, 5, 10, 20], description="K values of the few-shot curve"
    )
    supervised_episodes: int = Field(
        0, ge=0, description="`raysys evaluate`: episodes per K of the supervised-from-scratch "
        "baseline (the audio encoder trained on each episode's K shots; raysys/eval/"
        "supervised.py); 0 = off (it trains a network per episode)",
    )
    supervised_epochs: int = Field(10, ge=1, description="passes over the support windows "
                                   "per supervised episode")
    supervised_min_steps: int = Field(50, ge=1, description="at least this many Adam steps "
                                      "per supervised episode (K = 1 has few windows)")

    @field_validator("label_sets", "factors")
    @classmethod
    def _check_columns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return value
        bad = [c for c in value.values() if c != "label" and not c.startswith("label_")]
        if bad:
            raise ValueError(f"{bad}: label columns are named 'label' or 'label_*'")
        return value

    @field_validator("few_shot_shots", "labels_per_class")
    @classmethod
    def _check_shots(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value):
            raise ValueError(f"every K must be >= 1 (got {value})")
        return value
