"""Softmax temperature τ: fixed, or learnable as log τ and clamped to [τ_min, τ_max] (CLIP).

CLIP learns `log(1/τ)` and clamps it so that 1/τ <= 100 (τ >= 0.01). Here `forward()` returns
`exp(clamp(log τ, log τ_min, log τ_max))` with a straight-through gradient: the value is
always inside the bounds, and a parameter that drifted past a bound still receives the
gradient that brings it back (a plain clamp would give it zero gradient forever).
`clamp_()` additionally projects the parameter itself (call it after an optimiser step to
stop the drift, as CLIP does).
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
        log_tau = torch.tensor(math.log(init))
        if learnable:
            self.log_tau = nn.Parameter(log_tau)
        else:
            self.register_buffer("log_tau", log_tau)

    def forward(self) -> torch.Tensor:
        """τ as a 0-d tensor (differentiable when learnable)."""
        if not self.learnable:
            return self.log_tau.exp()
        clamped = self.log_tau.clamp(*self.bounds)
        return (self.log_tau + (clamped - self.log_tau).detach()).exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        self.log_tau.clamp_(*self.bounds)
