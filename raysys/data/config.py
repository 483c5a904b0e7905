"""Typed config of the data pipeline (`data.*`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from raysys.config_base import Section

Modality = Literal["audio", "image", "tabular"]
AudioChannel = Literal["logmel", "logstft", "pcen"]


class AudioFeatures(Section):
    """Multi-channel time-frequency stack `[C, F, T]` computed with torchaudio."""

    channels: list[AudioChannel] = Field(
        default_factory=lambda: ["logmel", "logstft", "pcen"], min_length=1
    )
    n_fft: int = Field(512, gt=0)
    hop_length: int = Field(256, gt=0)
    n_bins: int = Field(64, gt=0, description="frequency bins F shared by every channel")
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _check(self) -> AudioFeatures:
        if len(set(self.channels)) != len(self.channels):
            raise ValueError(f"channels has duplicates: {self.channels}")
        return self


class AudioAugment(Section):
    """Audio augmentations; each records whether it was applied and its parameters."""

    gain_db: tuple[float, float] = (-6.0, 6.0)
    gain_p: float = Field(0.8, ge=0, le=1)
    noise_snr_db: tuple[float, float] = (10.0, 40.0)
    noise_p: float = Field(0.5, ge=0, le=1)
    pitch_shift_semitones: tuple[float, float] = (-4.0, 4.0)
    pitch_shift_p: float = Field(0.5, ge=0, le=1)
    time_stretch_rate: tuple[float, float] = (0.7, 1.3)
    time_stretch_p: float = Field(0.5, ge=0, le=1)
    time_mask_max_frac: float = Field(0.15, ge=0, le=1)
    time_mask_p: float = Field(0.5, ge=0, le=1)
    freq_mask_max_frac: float = Field(0.15, ge=0, le=1)
    freq_mask_p: float = Field(0.5, ge=0, le=1)


class ImageAugment(Section):
    crop_scale: tuple[float, float] = (0.5, 1.0)
    crop_p: float = Field(1.0, ge=0, le=1)
    flip_p: float = Field(0.5, ge=0, le=1)
    color_strength: float = Field(0.4, ge=0, le=1)
    color_p: float = Field(0.8, ge=0, le=1)


class TabularAugment(Section):
    corrupt_fraction: tuple[float, float] = (0.1, 0.3)
    corrupt_p: float = Field(0.5, ge=0, le=1)


class Augment(Section):
    enabled: bool = True
    audio: AudioAugment = Field(default_factory=AudioAugment)
    image: ImageAugment = Field(default_factory=ImageAugment)
    tabular: TabularAugment = Field(default_factory=TabularAugment)


class DataConfig(Section):
    """Where the archive is and how entities become heterogeneous-view batches."""

    modalities: list[Modality] = Field(
        default_factory=lambda: ["audio", "image", "tabular"], min_length=1
    )
    views_per_modality: int = Field(2, ge=1, le=8)
    sample_rate: int = Field(16000, gt=0)
    clip_seconds: float = Field(1.0, gt=0, description="crop/pad length of every audio view")
    audio: AudioFeatures = Field(default_factory=AudioFeatures)
    image_size: int = Field(64, ge=8)
    tabular_window: int = Field(16, ge=1, description="rows per tabular view (padded + masked)")
    max_candidates: int = Field(16, ge=1, description="graded-relevance list length per entity")
    augment: Augment = Field(default_factory=Augment)
    batch_size: int = Field(32, ge=1)
    eval_fraction: float = Field(0.2, ge=0, lt=1, description="entities held out by key hash")
    max_bad_fraction: float = Field(0.05, ge=0, le=1, description="abort above this bad share")
    decode_concurrency: int | None = Field(None, ge=1, description="map tasks; None = Ray's")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if len(set(self.modalities)) != len(self.modalities):
            raise ValueError(f"modalities has duplicates: {self.modalities}")
        return self
