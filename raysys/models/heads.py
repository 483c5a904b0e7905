"""Projection heads (backbone feature -> shared `embed_dim`) and the COLA head.

- `ProjectionHead`: SimCLR-style `Linear -> ReLU -> Linear`, `[N, in_dim] -> [N, embed_dim]`;
  outputs are not normalised here (the objective normalises for cosine scores).
- `ColaHead`: `e = tanh(LayerNorm(Linear(x)))` (COLA, Saeed et al. 2021); the bilinear
  matrix `W` of `S = E_a W E_p^T` belongs to the objective, not to the model.
- `HeadSet`: one head per (head name, modality), so every modality lands in the same space of
  each head. Parameters: per pair `in_dim * hidden + hidden * embed_dim` (+ biases).
"""

from __future__ import annotations

import torch
from torch import nn


class ProjectionHead(nn.Module):
    def __init__(self, in_dim: int, hidden: int, out_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ColaHead(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)
        self.norm = nn.LayerNorm(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.norm(self.linear(x)))


class HeadSet(nn.Module):
    """`heads[head][modality]`: a projection per head and modality (COLA head optional)."""

    def __init__(
        self, in_dims: dict[str, int], names: list[str], hidden: int, out_dim: int, cola: bool
    ) -> None:
        super().__init__()
        self.heads = nn.ModuleDict(
            {
                name: nn.ModuleDict(
                    {m: ProjectionHead(d, hidden, out_dim) for m, d in in_dims.items()}
                )
                for name in names
            }
        )
        self.cola = (
            nn.ModuleDict({m: ColaHead(d, out_dim) for m, d in in_dims.items()}) if cola else None
        )

    def project(self, name: str, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.heads[name][modality](x)

    def project_cola(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if self.cola is None:
            raise ValueError("the model has no COLA head (set model.cola = true)")
        return self.cola[modality](x)
