"""Typed config of `raysys embed` (`key=value` overrides on the command line).

Only the settings marked *output* change the embeddings; they enter `config_hash`, which is
written into every row. The others (actors, shard size, CPUs) only change how the work runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from raysys.config import ConfigError, apply_overrides
from raysys.config_base import Section
from raysys.data.config import Modality
from raysys.models.config import INVARIANT_HEAD


class EmbedError(RuntimeError):
    """The embedding job cannot run (mismatched checkpoint/archive, foreign output folder...)."""


class EmbedIncomplete(EmbedError):
    """The stream ended before every shard was written; a rerun finishes the missing ones."""


class AudioWindows(Section):
    """Long audio: windows of the model's `data.clip_seconds`, pooled into one vector."""

    hop_seconds: float | None = Field(
        None, gt=0, description="output: window hop in seconds; None = clip_seconds (no overlap)"
    )
    max_windows: int | None = Field(
        None, ge=1, description="output: at most this many windows per file, evenly spaced over "
        "the file (the row's window count says how many were used); None = all"
    )
    pool: Literal["mean", "max"] = Field("mean", description="output: window pooling")
    keep_windows: bool = Field(
        False, description="output: also write the per-window vectors and their start times"
    )
    window_batch: int = Field(256, ge=1, description="windows per model call (memory bound)")


class EmbedConfig(Section):
    """How `raysys embed` runs: what it writes (output settings) and how it scales."""

    views: list[Modality] | None = Field(
        None, description="output: views to embed; None = every view the model and archive share"
    )
    head: str = Field(INVARIANT_HEAD, description="output: which head's embedding, or a LOEV++ "
                      "branch's before its projection (e.g. pitch_shift_branch)")
    normalize: bool = Field(True, description="output: L2-normalise each embedding")
    dtype: Literal["float32", "float16"] = Field("float32", description="output: stored dtype")
    audio: AudioWindows = Field(default_factory=AudioWindows)
    shard_entities: int = Field(256, ge=1, description="entities per output shard (unit of "
                                "resume: a shard is written whole or not at all)")
    batch_size: int = Field(32, ge=1, description="entities per inference batch")
    actors: int = Field(1, ge=1, description="inference actors (each loads the model once)")
    cpus_per_actor: float = Field(1.0, gt=0, description="logical CPUs per inference actor")
    gpus_per_actor: float | None = Field(
        None, ge=0, description="GPUs per actor (fractions share a GPU); None = 1 when the "
        "cluster has GPUs, else 0"
    )
    decode_cpus: float = Field(1.0, gt=0, description="logical CPUs per preprocessing task")
    decode_concurrency: int | None = Field(None, ge=1, description="preprocessing tasks in "
                                           "flight; None = Ray's choice")
    rows_per_task: int = Field(
        64, ge=1, description="entities per preprocessing task (fewer: more Ray Data round trips)")
    progress_every_s: float = Field(5.0, gt=0, description="seconds between progress lines")

    @field_validator("gpus_per_actor")
    @classmethod
    def _whole_above_one(cls, value: float | None) -> float | None:
        if value is not None and value > 1 and not float(value).is_integer():
            raise ValueError(f"{value}: above 1 it must be a whole number (Ray shares a GPU "
                             "only in fractions of one)")
        return value

    @model_validator(mode="after")
    def _check(self) -> EmbedConfig:
        if self.views is not None and len(set(self.views)) != len(self.views):
            raise ValueError(f"views has duplicates: {self.views}")
        if self.views is not None and not self.views:
            raise ValueError("views: give at least one view (or leave unset for all)")
        return self

    def output_settings(self) -> dict[str, Any]:
        """The settings that change what is written (hashed into `config_hash`)."""
        audio = self.audio.model_dump(mode="json", exclude={"window_batch"})
        return {"head": self.head, "normalize": self.normalize, "dtype": self.dtype,
                "audio": audio}


def load_embed_config(overrides: list[str] | None = None) -> EmbedConfig:
    """EmbedConfig from dotted `key=value` overrides (an `embed.` prefix is accepted)."""
    stripped = [o[len("embed."):] if o.startswith("embed.") else o for o in overrides or []]
    tree = apply_overrides({}, stripped)
    try:
        return EmbedConfig.model_validate(tree)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = "embed." + ".".join(str(p) for p in err["loc"]) if err["loc"] else "embed"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{key}: {msg}")
        raise ConfigError("invalid embed config:\n  " + "\n  ".join(lines)) from None
