"""Softmax temperature τ: fixed, or learnable as log τ and clamped to [τ_min, τ_max] (CLIP).

CLIP learns `log(1/τ)` and clamps it so that 1/τ <= 100 (τ >= 0.01). Here `forward()` returns
`exp(clamp(log τ, log τ_min, log τ_max))` with a straight-through gradient: the value is
always inside the bounds, and a parameter that drifted past a bound still receives the
gradient that brings it back (a plain clamp would give it zero gradient forever).
`clamp_()` additionally projects the parameter itself (call it after an optimiser step to
stop the drift, as CLIP does).

`log_tau` has shape [1], not []: DeepSpeed's start-up broadcast of the parameters views
each one as bytes, which fails for 0-d tensors ("self.dim() cannot be 0"). Checkpoints
from before the change (0-d `log_tau`) load unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Temperature(nn.Module):
    def __init__(
        self, init: float, *, learnable: bool = False, minimum: float = 0.01, maximum: float = 1.0
    ) -> None:
        super().__init__()
        if not (0 < minimum <= maximum) or not math.isfinite(maximum):
            raise ValueError(f"temperature bounds need 0 < min <= max, got {minimum}, {maximum}")
        if init <= 0 or (learnable and not minimum <= init <= maximum):
            raise ValueError(f"temperature {init} must be > 0 and within [{minimum}, {maximum}]")
        self.learnable = learnable
        self.bounds = (math.log(minimum), math.log(maximum))
        log_tau = torch.tensor([math.log(init)])
        if learnable:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    def forward(self) -> torch.Tensor:
        """τ as a 0-d tensor (differentiable when learnable)."""
        log_tau = self.log_tau.squeeze(0)
        if not self.learnable:
            return log_tau.exp()
        clamped = log_tau.clamp(*self.bounds)
        return (log_tau + (clamped - log_tau).detach()).exp()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        stored = state_dict.get(prefix + "log_tau")
        if stored is not None and stored.dim() == 0:  # saved before log_tau had shape [1]
            state_dict[prefix + "log_tau"] = stored.reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_tau.clamp_(*self.bounds)
