"""Typed config of a sweep (`sweep.*`): what to optimise, how to search, what to search over.

    sweep:
      metric: eval/label/ncc            # or a list: multi-objective (Pareto front)
      mode: max                         # or a list, one per metric
      num_samples: 16
      search: optuna                    # grid | random | optuna
      scheduler: asha                   # asha | none
      grace_period: 4                   # optimizer steps before ASHA may stop a trial
      max_concurrent_trials: auto       # or a number; checked against the cluster
      space:
        objective.w_cont: {loguniform: [0.01, 10]}
        objective.temperature: {choice: [0.05, 0.07, 0.1]}
        train.lr: default               # the documented default range (raysys.tune.space)

Checks that need the rest of the config (does the key exist, does the config accept the
range's ends) are in `raysys.tune.checks`; this module checks the section on its own.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from raysys.config_base import Section

Mode = Literal["min", "max"]
DISTRIBUTIONS = ("loguniform", "uniform", "randint", "choice")


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


class Dimension(Section):
    """One searched key: exactly one of the distributions. `randint`'s upper end is exclusive
    (as in Ray Tune); `loguniform` needs a positive lower end."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    randint: tuple[int, int] | None = None
    choice: list[Any] | None = None

    @field_validator("choice", mode="before")
    @classmethod
    def _numbers(cls, value: Any) -> Any:
        """YAML 1.1 reads `1e-9` (no dot) as text: such choices become numbers."""
        if not isinstance(value, list):
            return value
        return [_number(v) for v in value]

    @model_validator(mode="after")
    def _check(self) -> Dimension:
        given = [k for k in ("loguniform", "uniform", "randint", "choice")
                 if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform, uniform, randint, choice "
                             f"(got {given or 'none'})")
        kind = given[0]
        value = getattr(self, kind)
        if kind == "choice":
            if not value:
                raise ValueError("choice: empty list")
            return self
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{kind}: ends must be finite (got {list(value)})")
        if kind == "randint" and high - low < 1:
            raise ValueError(f"randint: empty range [{low}, {high}) (the upper end is exclusive)")
        if kind != "randint" and not low < high:
            raise ValueError(f"{kind}: empty range [{low}, {high}] (need low < high)")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"loguniform: the lower end must be > 0 (got {low})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("loguniform", "uniform", "randint", "choice")
                    if getattr(self, k) is not None)

    @property
    def values(self) -> Any:
        return getattr(self, self.kind)

    def probe_values(self) -> list[Any]:
        """Values the config must accept: the ends of a range, every choice."""
        if self.kind == "choice":
            return list(self.values)
        low, high = self.values
        return [low, high - 1] if self.kind == "randint" else [low, high]


def flatten_space(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"lr": {"choice": [..]}}}` -> `{"train.lr": {"choice": [..]}}`: a mapping
    stops being a section where its keys are distribution names (or it is `default`)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not set(value) & set(DISTRIBUTIONS):
            out.update(flatten_space(value, name + "."))
        else:
            out[name] = value
    return out


class SweepConfig(Section):
    """`raysys sweep`: one Ray Tune trial = one full pretraining run of the config with the
    trial's values set at the `space` keys."""

    metric: str | list[str] = Field(
        "eval/label/ncc", description="an in-training evaluation metric (`eval/<label set>/"
        "<ncc|logistic|knn|cdnv>`, `eval/<modality>/<label set>/<metric>`, "
        "`eval/retrieval/<a>-><b>/R@1`, `eval/relevance/nDCG@10`); a list = multi-objective "
        "(Pareto front)")
    mode: Mode | list[Mode] = Field("max", description="max or min; a list: one per metric")
    num_samples: int = Field(8, ge=1, description="trials (grid: repeats of the whole grid)")
    search: Literal["grid", "random", "optuna"] = Field(
        "random", description="grid: every combination of `choice` values; random; optuna: "
        "TPE (multi-objective when metric is a list)")
    scheduler: Literal["asha", "none"] = Field(
        "asha", description="asha: stop trials whose metric trails at a rung; none: run all")
    grace_period: int = Field(4, ge=1, description="steps before ASHA may stop a trial")
    reduction_factor: float = Field(2.0, gt=1, description="ASHA: keep 1/factor at each rung")
    max_concurrent_trials: int | Literal["auto"] = Field(
        "auto", description="auto = as many as the cluster's CPUs (GPUs) hold at once")
    space: dict[str, Any] = Field(
        default_factory=dict, description="dotted config key -> distribution, or `default` "
        "for the documented default range of that key")
    trial_cpus: float = Field(
        0.0, ge=0, description="logical CPUs of each trial's driver function (it only waits "
        "on its TorchTrainer); 0 keeps every CPU for training and Ray Data")

    @field_validator("space", mode="before")
    @classmethod
    def _check_space(cls, value: Any) -> dict[str, Dimension | str]:
        """Flatten nested keys (`{train: {lr: ...}}` and the CLI's `sweep.space.train.lr=...`
        both mean `train.lr`), then check each distribution, naming its key."""
        if not isinstance(value, dict):
            raise ValueError(f"a mapping of dotted config keys to distributions (got {value!r})")
        out: dict[str, Dimension | str] = {}
        for key, dim in flatten_space(value).items():
            if dim == "default" or isinstance(dim, Dimension):
                out[key] = dim
                continue
            try:
                out[key] = Dimension.model_validate(dim)
            except ValidationError as e:
                detail = "; ".join(f"{'.'.join(map(str, x['loc']))} {x['msg']}".strip()
                                   .removeprefix("Value error, ") for x in e.errors())
                raise ValueError(f"{key}: {detail.replace('Value error, ', '')} "
                                 f"(got {dim!r})") from None
        return out

    @field_validator("max_concurrent_trials")
    @classmethod
    def _check_concurrency(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError(f"must be >= 1 or 'auto' (got {value})")
        return value

    @model_validator(mode="after")
    def _check(self) -> SweepConfig:
        metrics = self.metrics
        if len(set(metrics)) != len(metrics) or not metrics:
            raise ValueError(f"metric: give one metric or a list of distinct ones (got {metrics})")
        if isinstance(self.mode, list) and len(self.mode) != len(metrics):
            raise ValueError(f"mode: {len(self.mode)} modes for {len(metrics)} metrics")
        if len(metrics) > 1 and self.search != "optuna":
            raise ValueError(f"metric: a list (multi-objective) needs sweep.search=optuna "
                             f"(got {self.search!r})")
        return self

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return list(self.mode) if isinstance(self.mode, list) else [self.mode] * len(self.metrics)

    @property
    def multi_objective(self) -> bool:
        return len(self.metrics) > 1
