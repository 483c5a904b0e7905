"""The search space: documented default ranges, Ray Tune domains, trial values into a config.

Default ranges (`space: {key: default}`):

| key | default |
|---|---|
| `objective.w_bin` | loguniform [0.1, 10] |
| `objective.w_cont` | loguniform [0.01, 10] |
| `objective.w_loev` | loguniform [0.1, 10] |
| `objective.loev.weights.<head>` | uniform [0, 2] (a head: `invariant` or a tracked augmentation) |
| `objective.temperature` | choice [0.03, 0.05, 0.07, 0.1, 0.2] |
| `objective.loev.temperature` | choice [0.05, 0.1, 0.2] |
| `train.lr` | loguniform [1e-4, 1e-2] |
"""

from __future__ import annotations

import copy
from typing import Any

from raysys.config import ConfigError
from raysys.tune.config import Dimension, SweepConfig

DEFAULT_RANGES: dict[str, dict[str, Any]] = {
    "objective.w_bin": {"loguniform": [0.1, 10.0]},
    "objective.w_cont": {"loguniform": [0.01, 10.0]},
    "objective.w_loev": {"loguniform": [0.1, 10.0]},
    "objective.loev.weights.*": {"uniform": [0.0, 2.0]},
    "objective.temperature": {"choice": [0.03, 0.05, 0.07, 0.1, 0.2]},
    "objective.loev.temperature": {"choice": [0.05, 0.1, 0.2]},
    "train.lr": {"loguniform": [1e-4, 1e-2]},
}


def default_range(key: str) -> Dimension:
    """The documented default range of `key`; ConfigError when it has none."""
    spec = DEFAULT_RANGES.get(key)
    if spec is None and key.startswith("objective.loev.weights."):
        spec = DEFAULT_RANGES["objective.loev.weights.*"]
    if spec is None:
        raise ConfigError(f"sweep.space.{key}: no default range for this key (keys with one: "
                          f"{', '.join(DEFAULT_RANGES)}); give a distribution")
    return Dimension.model_validate(spec)


def dimensions(sweep: SweepConfig) -> dict[str, Dimension]:
    """`sweep.space` with `default` entries resolved."""
    return {key: default_range(key) if dim == "default" else dim
            for key, dim in sweep.space.items()}


def tune_domain(dim: Dimension, search: str) -> Any:
    """The Ray Tune domain of one dimension (grid: `choice` becomes a grid axis)."""
    from ray import tune

    if search == "grid":
        if dim.kind != "choice":
            raise ValueError(f"search=grid needs `choice` values (got {dim.kind})")
        return tune.grid_search(list(dim.values))
    if dim.kind == "choice":
        return tune.choice(list(dim.values))
    low, high = dim.values
    return {"loguniform": tune.loguniform, "uniform": tune.uniform,
            "randint": tune.randint}[dim.kind](low, high)


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """Tune's `param_space`: flat `{dotted key: domain}` (Tune would nest dotted keys of a
    nested dict; flat keys keep them verbatim and make Optuna's parameter names readable)."""
    return {key: tune_domain(dim, sweep.search) for key, dim in dimensions(sweep).items()}


def set_dotted(tree: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """A copy of the nested config dict with `key` (dotted) set to `value`."""
    out = copy.deepcopy(tree)
    node = out
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"sweep.space.{key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value
    return out


def get_dotted(tree: dict[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def trial_tree(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The config tree of one trial: the base tree with every searched key set."""
    tree = copy.deepcopy(base)
    for key, value in values.items():
        tree = set_dotted(tree, key, value)
    return tree
