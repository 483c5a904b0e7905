"""The root config: YAML file + dotted `key=value` overrides, validated before any work starts.

    cfg = load_config("configs/demo.yaml", ["data.batch_size=64", "objective.temperature=0.1"])

Every error names the dotted key and what was expected, e.g.
``data.batch_size: Input should be greater than or equal to 1 (got 0)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from raysys.config_base import Section
from raysys.data.config import DataConfig
from raysys.eval.config import EvaluationConfig
from raysys.models.config import ModelConfig
from raysys.objectives.config import ObjectiveConfig
from raysys.train.config import TrainConfig
from raysys.tune.config import SweepConfig


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key path."""


class RaysysConfig(Section):
    """Root of the config tree. Sections are added as the system grows."""

    archive: str = Field("raysys-demo/archive", description="local folder or s3:// prefix")
    out: str = Field("raysys-demo/run", description="run folder (local or s3://)")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvaluationConfig = Field(default_factory=EvaluationConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)  # `raysys sweep` only

    @model_validator(mode="after")
    def _check_sections_agree(self) -> RaysysConfig:
        """Cross-section rules; each message names the keys involved."""
        from raysys.data.augment import AUG_PARAMS

        obj, model, data = self.objective, self.model, self.data
        if obj.loev.enabled:
            recorded = {name for m in data.modalities for name in AUG_PARAMS[m]}
            for aug in obj.loev.augmentations:
                if aug not in model.loev_heads:
                    raise ValueError(f"objective.loev.augmentations: {aug!r} has no head; "
                                     f"add it to model.loev_heads (now {model.loev_heads})")
                if aug not in recorded:
                    raise ValueError(f"objective.loev.augmentations: {aug!r} is not recorded by "
                                     f"data.modalities {data.modalities} (recorded: "
                                     f"{sorted(recorded)})")
        if obj.cola and not model.cola:
            raise ValueError("objective.cola needs model.cola: true (the COLA head)")
        if obj.mode == "anchor" and obj.anchor_modality not in data.modalities:
            raise ValueError(f"objective.anchor_modality {obj.anchor_modality!r} is not in "
                             f"data.modalities {data.modalities}")
        return self


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{key}: {msg}{shown}" if key else msg)
    return "invalid config:\n  " + "\n  ".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key segment")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: value {raw!r} is not valid YAML: {e}") from e
    return parts, value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted override in a nested dict (the schema check happens afterwards)."""
    for text in overrides:
        parts, value = parse_override(text)
        node = tree
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if child is None:  # an unset optional mapping (e.g. eval.label_sets) filled by key
                child = node[part] = {}
            if not isinstance(child, dict):
                path = ".".join(parts[: i + 1])
                raise ConfigError(f"override {text!r}: {path} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return tree


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from e
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return tree


def build_config(tree: dict[str, Any]) -> RaysysConfig:
    try:
        return RaysysConfig.model_validate(tree)
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RaysysConfig:
    """Read YAML (optional), apply dotted overrides, validate the whole tree."""
    tree = read_yaml(path) if path else {}
    return build_config(apply_overrides(tree, list(overrides or [])))


def dump_config(cfg: RaysysConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
