"""The root config: YAML file + dotted `key=value` overrides, validated before any work starts.

    cfg = load_config("configs/demo.yaml", ["data.batch_size=64", "objective.temperature=0.1"])

Every error names the dotted key and what was expected, e.g.
``data.batch_size: Input should be greater than or equal to 1 (got 0)``.
"""

from __future__ import annotations

import copy
import difflib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from raysys.config_base import Section
from raysys.data.config import DataConfig
from raysys.errors import UserError
from raysys.eval.config import EvaluationConfig
from raysys.models.config import ModelConfig
from raysys.objectives.config import ObjectiveConfig
from raysys.train.config import TrainConfig
from raysys.tune.config import SweepConfig


class ConfigError(ValueError, UserError):
    """A config file or override is wrong; the message names the key path."""


class RaysysConfig(Section):
    """Root of the config tree. Sections are added as the system grows."""

    archive: str = Field("raysys-demo/archive", description="local folder or s3:// prefix")
    out: str = Field("raysys-demo/run", description="local run folder: every output of a run "
                     "lands under it (made absolute on the driver)")
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    objective: ObjectiveConfig = Field(default_factory=ObjectiveConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvaluationConfig = Field(default_factory=EvaluationConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)  # `raysys sweep` only

    @model_validator(mode="after")
    def _check_sections_agree(self) -> RaysysConfig:
        """Cross-section rules (raysys.config_rules); each message names the keys involved."""
        from raysys.config_rules import cross_section_errors, resolve_defaults

        resolve_defaults(self)
        errors = cross_section_errors(self)
        if errors:
            raise ValueError("\n  ".join(errors))
        return self


def _format_errors(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + did_you_mean(key)
        got = e.get("input")
        shown = "" if isinstance(got, dict) else f" (got {got!r})"
        lines.append(f"{key}: {msg}{shown}" if key else msg)
    return "invalid config:\n  " + "\n  ".join(lines)


def dotted_keys(model: type[BaseModel] = RaysysConfig, prefix: str = "") -> list[str]:
    """Every leaf key of a config class as a dotted path (`train.steps`, `data.audio.n_bins`)."""
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += dotted_keys(sub, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def did_you_mean(key: str) -> str:
    """`; did you mean `train.steps`?` for a misspelt dotted key, else ''."""
    known = dotted_keys()
    leaf = key.rsplit(".", 1)[-1]
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if not close:  # the right name in the wrong section: `data.steps` -> `train.steps`
        close = [k for k in known if k.rsplit(".", 1)[-1] == leaf][:1]
    if not close:
        close = [k for k in known if difflib.get_close_matches(leaf, [k.rsplit(".", 1)[-1]],
                                                               cutoff=0.8)][:1]
    return f"; did you mean `{close[0]}`?" if close else ""


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


# Keys removed from the config: (the value every earlier run's config.yaml holds, why). A
# saved config with that value still loads (the key is dropped); any other value is refused.
RETIRED: dict[str, tuple[Any, str]] = {
    "eval.test_fraction": (0.25, "the in-training evaluation predicts every held-out entity "
                                 "out of fold (eval.folds)"),
    "eval.few_shot_heads": (["prototype"], "few-shot curves use the prototype head"),
    "eval.neighbours_k": (10, "it belonged to the removed evaluate_embeddings battery"),
    "eval.probe_modality": ("audio", "the factor probes read every modality's spaces"),
}


def drop_retired(tree: dict[str, Any]) -> dict[str, Any]:
    """`tree` without retired keys holding their old default; ConfigError for other values."""
    tree = copy.deepcopy(tree)
    for key, (old, why) in RETIRED.items():
        *parents, leaf = key.split(".")
        node = tree
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or leaf not in node:
            continue
        if node.pop(leaf) != old:
            raise ConfigError(f"{key}: this key was removed ({why}); delete it")
    return tree


def build_config(tree: dict[str, Any]) -> RaysysConfig:
    try:
        return RaysysConfig.model_validate(drop_retired(tree))
    except ValidationError as e:
        raise ConfigError(_format_errors(e)) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RaysysConfig:
    """Read YAML (optional), apply dotted overrides, validate the whole tree."""
    tree = read_yaml(path) if path else {}
    return build_config(apply_overrides(tree, list(overrides or [])))


def dump_config(cfg: RaysysConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def explain_config(cfg: RaysysConfig) -> str:
    """One line per leaf key: `key = value  (default D) description`."""
    current = _flatten(cfg.model_dump(mode="json"))
    defaults = _flatten(RaysysConfig().model_dump(mode="json"))
    lines = []
    for key in dotted_keys():
        value, default = current.get(key), defaults.get(key)
        mark = "" if value == default else f"  (default {json.dumps(default)})"
        desc = _description(key)
        lines.append(f"{key} = {json.dumps(value)}{mark}" + (f"\n    {desc}" if desc else ""))
    return "\n".join(lines) + "\n"


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        sub = f"{prefix}{key}"
        if isinstance(value, dict) and sub not in _LEAF_KEYS:
            out.update(_flatten(value, f"{sub}."))
        else:
            out[sub] = value
    return out


def _description(key: str) -> str:
    model: type[BaseModel] = RaysysConfig
    *sections, leaf = key.split(".")
    for name in sections:
        model = model.model_fields[name].annotation  # type: ignore[assignment]
    return model.model_fields[leaf].description or ""


_LEAF_KEYS = frozenset(dotted_keys())  # a leaf whose value is a mapping is not descended into
