"""Typed config of the encoders and heads (`model.*`).

Defaults are small enough to train on two CPU cores (well under a million parameters in
all); docs/models.md lists sizes that make sense on a GPU. Tabular feature counts and category
cardinalities are data statistics, not config: they reach the model as `ModelInputs`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from raysys.config_base import Section
from raysys.data.config import Modality

INVARIANT_HEAD = "invariant"
COLA_HEAD = "cola"
CROSS_HEAD = "cross"


AUDIO_WIDTHS = {"cnn": [16, 32, 64], "tdnn": [256, 256, 256]}


def require_tdnn(option: str, why: str, kind: str) -> None:
    """Options that read the tdnn's frame layers fail early on the 2-D cnn."""
    if kind != "tdnn":
        raise ValueError(f"{option} {why}: it needs model.audio.kind=tdnn (got {kind})")


class AudioEncoderConfig(Section):
    """Encoder of the `[C, F, T]` spectrogram stack (raysys.models.audio).

    cnn: one 2-D stage per width (2 convs + 2x2 pool); tdnn: x-vector style, one 1-D
    convolution over time per width on the whole spectral vector of each frame, then the mean
    and std over frames.
    """

    kind: Literal["cnn", "tdnn"] = "cnn"
    widths: list[int] | None = Field(
        None, min_length=2, description="channels per stage (cnn) or per frame layer (tdnn); "
        f"None = the kind's default {AUDIO_WIDTHS}",
    )
    pool: Literal["time", "stats", "global"] = Field(
        "time", description="time: mean over frames, keep `freq_bands` bands, then a Linear; "
        "stats: mean and std over frames per band (how the sound changes), then a Linear; "
        "global: mean over frequency and time (loses where in frequency energy lies)",
    )
    freq_bands: int = Field(8, ge=1, description="frequency bands kept by pool=time (cnn)")
    aggregate: Literal["last", "all"] = Field(
        "last", description="tdnn: the frame statistics of the last frame layer, or of every "
        "frame layer concatenated (ECAPA's multi-layer aggregation: what the first layers see "
        "of the spectrum reaches the embedding)",
    )

    periodicity: int = Field(
        0, ge=0, description="tdnn: learned mixtures of the frame features whose autocorrelation "
        "over frames joins their mean and std (what repeats how fast: tempo, which the mean and "
        "std discard); 0 = off",
    )
    periodicity_lags: int = Field(
        40, ge=1, description="autocorrelation lags in frames (1..lags) of `periodicity`; 40 "
        "frames at hop 256 and 16 kHz is 0.64 s",
    )

    @model_validator(mode="after")
    def _check(self) -> AudioEncoderConfig:
        if self.periodicity:
            require_tdnn("model.audio.periodicity", "reads the frame layers over time", self.kind)
        if self.aggregate == "all":
            require_tdnn("model.audio.aggregate=all", "concatenates frame layers", self.kind)
        if self.widths is None:
            self.widths = list(AUDIO_WIDTHS[self.kind])
        if any(w < 1 for w in self.widths):
            raise ValueError(f"widths must all be >= 1 (got {self.widths})")
        return self


class ImageEncoderConfig(Section):
    """torchvision ResNet, random init. `resnet_tiny` = BasicBlock [1,1,1,1] at `width` base."""

    kind: Literal["resnet_tiny", "resnet18"] = "resnet_tiny"
    width: int = Field(8, ge=1, description="base width of resnet_tiny (stages w, 2w, 4w, 8w)")
    pool: Literal["grid", "global"] = Field(
        "grid", description="grid: mean over a grid x grid layout of cells, then a Linear; "
        "global: one mean over the whole map (loses where things are)",
    )
    grid: int = Field(3, ge=1, description="cells per side kept by pool=grid")


class TabularEncoderConfig(Section):
    """Per-row encoder (numbers + category embeddings), pooled over the masked row window."""

    kind: Literal["mlp", "transformer"] = "mlp"
    hidden: int = Field(64, ge=1, description="row / token width")
    cat_dim: int = Field(8, ge=1, description="embedding size of each categorical column")
    layers: int = Field(2, ge=1, description="transformer layers (mlp: fixed 2-layer row MLP)")
    heads: int = Field(2, ge=1, description="attention heads (transformer only)")

    @model_validator(mode="after")
    def _check(self) -> TabularEncoderConfig:
        if self.kind == "transformer" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be divisible by heads ({self.heads})")
        return self


class ModelConfig(Section):
    """Per-modality encoders, projection heads to `embed_dim`, LOEV heads, LOEV++, COLA."""

    embed_dim: int = Field(64, ge=1, description="shared embedding dimension of every head")
    proj_hidden: int = Field(128, ge=1, description="hidden width of the projection MLPs")
    audio: AudioEncoderConfig = Field(default_factory=AudioEncoderConfig)
    image: ImageEncoderConfig = Field(default_factory=ImageEncoderConfig)
    tabular: TabularEncoderConfig = Field(default_factory=TabularEncoderConfig)
    loev_heads: list[str] = Field(
        default_factory=list,
        description="tracked augmentations, one extra head each (e.g. pitch_shift, time_stretch)",
    )
    loev_plus_plus: bool = Field(False, description="replicate the last encoder stage per head")
    loev_plus_plus_modalities: list[Modality] = Field(
        default_factory=lambda: ["audio"], description="encoders whose last stage is replicated"
    )
    loev_branch_periodicity: dict[str, int] = Field(
        default_factory=dict, description="LOEV++ heads whose audio branch (its own last stage) "
        "also pools the autocorrelation of this many learned frame-feature mixtures "
        "(model.audio.periodicity, tdnn), e.g. {time_stretch: 16}: the time branch can read "
        "tempo while the shared backbone stays as it is (docs/learning.md, session 18)",
    )
    cross_head: bool | None = Field(
        None, description="a separate `cross` head per modality that takes the cross-modal "
        "pairs of the binary term, so aligning modalities does not pull what only one modality "
        "carries (timbre, voice) out of the invariant head (docs/learning.md); None = on when "
        "the run has two or more modalities (resolved with data.modalities)",
    )
    cross_backprop: float = Field(
        0.0, ge=0, le=1, description="share of the cross head's gradient that reaches the "
        "encoders: 0 = none, the encoders are shaped by same-modality pairs only and the cross "
        "heads learn to align their features (the measured default, docs/learning.md); 1 = all",
    )
    _cross_head_auto: bool = PrivateAttr(False)  # cross_head left at None, resolved from
    # data.modalities (raysys.config_rules.resolve_defaults); resolved again if they change
    cola: bool = Field(False, description="add the COLA head tanh(LayerNorm(Linear(x)))")
    centre_momentum: float | None = Field(
        0.9, ge=0, lt=1,
        description="running-mean centring of each (head, modality) embedding, EMA momentum of "
        "the mean; None = off (see raysys.models.heads.EmbeddingCentre)",
    )

    @field_validator("loev_heads")
    @classmethod
    def _check_heads(cls, heads: list[str]) -> list[str]:
        for name in heads:
            if name in (INVARIANT_HEAD, COLA_HEAD, CROSS_HEAD):
                raise ValueError(f"{name!r} is a reserved head name")
        if len(set(heads)) != len(heads):
            raise ValueError(f"duplicates in {heads}")
        return heads

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if self.loev_plus_plus and not self.loev_heads:
            raise ValueError("loev_plus_plus needs at least one entry in loev_heads")
        periodic = self.loev_branch_periodicity
        if periodic:
            unknown = sorted(set(periodic) - set(self.loev_heads))
            if unknown:
                raise ValueError(f"loev_branch_periodicity names {unknown}, which are not in "
                                 f"loev_heads {self.loev_heads}")
            if not (self.loev_plus_plus and "audio" in self.loev_plus_plus_modalities):
                raise ValueError("loev_branch_periodicity shapes LOEV++ audio branches: it needs "
                                 "loev_plus_plus=true with audio in loev_plus_plus_modalities")
            require_tdnn("model.loev_branch_periodicity", "reads frame layers over time",
                         self.audio.kind)
            if any(c < 1 for c in periodic.values()):
                raise ValueError(f"loev_branch_periodicity: channels must be >= 1 (got {periodic})")
        return self

    def shared_head(self) -> str:
        """The head whose modalities share one space: where cross-modal retrieval ranks and
        entity embeddings fuse (`cross` with `cross_head`, else `invariant`)."""
        return CROSS_HEAD if self.cross_head else INVARIANT_HEAD

    def head_names(self) -> list[str]:
        """Contrastive heads in order: the invariant head, the cross-modal head (with
        `cross_head`), then one per tracked augmentation."""
        return [INVARIANT_HEAD, *([CROSS_HEAD] if self.cross_head else []), *self.loev_heads]
