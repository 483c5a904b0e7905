"""What every per-view encoder shares: a trunk, a last stage, and fresh copies of the last stage.

An encoder maps one batch of views `[N, ...]` to features `[N, out_dim]` as
`last(trunk(x))`. LOEV++ replicates `last` once per head (`fresh_copy`), so each head gets
its own independently initialised branch on the shared trunk.

Every normalisation layer is per sample (GroupNorm / LayerNorm, never BatchNorm): an
embedding must not depend on which other rows share its batch, or masked (missing) views,
gradient-cache sub-batches and cross-worker batches would change each other's outputs.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups that divide `channels`."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def reset_all(module: nn.Module) -> nn.Module:
    """Re-draw every parameter of `module` that has a `reset_parameters` (in place)."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()
    return module


def fresh_copy(module: nn.Module) -> nn.Module:
    """Same architecture, its own parameters, freshly initialised (not a copy of the values)."""
    return reset_all(copy.deepcopy(module))


class StagedEncoder(nn.Module):
    """`forward(x) = last(trunk(x))`; subclasses set `trunk`, `last` and `out_dim`."""

    trunk: nn.Module
    last: nn.Module
    out_dim: int

    def check(self, x: torch.Tensor | dict[str, torch.Tensor]) -> None:
        """Raise a ValueError naming the expected shape when `x` cannot be encoded."""

    def forward(self, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        self.check(x)
        return self.last(self.trunk(x))
