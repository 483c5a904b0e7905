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
from typing import Any

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


NORMS = (nn.GroupNorm, nn.LayerNorm, nn.BatchNorm1d, nn.BatchNorm2d)


def _is_layer(module: nn.Module) -> bool:
    """A step that transforms (has parameters and is not only a normalisation)."""
    return not isinstance(module, NORMS) and any(True for _ in module.parameters())


class LayerStack(nn.Sequential):
    """Runs its layers in order and returns every layer's output concatenated over channels
    (`[N, sum of widths, T]`); iterating it still gives the layers one by one."""

    def outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each layer's output, in order (each layer takes the previous one's)."""
        out = []
        for layer in self:
            x = layer(x)
            out.append(x)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.outputs(x), dim=1)


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

    def trunk_layers(
        self, x: torch.Tensor | dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """`trunk(x)`, and `{layer1, layer2, ...}` from the same pass: the output of each trunk
        layer with parameters (not a norm), averaged over every axis after the channels
        (`[N, C]`); evaluation reads how class structure grows with depth (then the backbone
        and the heads). A trunk that is not a Sequential of layers, or whose output is not a
        tensor, is one step or none; the members of a `LayerStack` count one by one."""
        self.check(x)
        layers = list(self.trunk) if isinstance(self.trunk, nn.Sequential) else [self.trunk]
        out: dict[str, torch.Tensor] = {}

        def record(layer: nn.Module, h: Any) -> None:
            if isinstance(h, torch.Tensor) and _is_layer(layer):
                out[f"layer{len(out) + 1}"] = h.flatten(2).mean(-1) if h.dim() > 2 else h

        h = x
        for layer in layers:
            if isinstance(layer, LayerStack):
                stacked = layer.outputs(h)
                for member, output in zip(layer, stacked, strict=True):
                    record(member, output)
                h = torch.cat(stacked, dim=1)
            else:
                h = layer(h)
                record(layer, h)
        return h, out
