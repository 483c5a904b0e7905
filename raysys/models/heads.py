"""Projection heads (backbone feature -> shared `embed_dim`) and the COLA head.

- `ProjectionHead`: SimCLR-style `Linear -> ReLU -> Linear`, `[N, in_dim] -> [N, embed_dim]`;
  outputs are not normalised here (the objective normalises for cosine scores).
- `ColaHead`: `e = tanh(LayerNorm(Linear(x)))` (COLA, Saeed et al. 2021); the bilinear
  matrix `W` of `S = E_a W E_p^T` belongs to the objective, not to the model.
- `HeadSet`: one head per (head name, modality), so every modality lands in the same space of
  each head. Parameters: per pair `in_dim * hidden + hidden * embed_dim` (+ biases).
- `EmbeddingCentre`: a running mean per (head, modality) subtracted from that head's output.

Why centring: a randomly initialised encoder maps every input of a modality into a narrow cone
(demo, random init: mean cosine 0.99 between different entities), and each modality into its
own cone. Terms whose softmax mixes modalities (the LOEV pool of all views, the embedding
queue) then score an entity's cross-modal positive far below other entities' same-modality
views; the cheapest way down is to collapse every embedding onto one point (measured: the
demo's per-modality embeddings became constant and cross-modal R@1 was chance). Subtracting
each (head, modality) mean removes both the cone and the modality gap. The mean is a buffer,
not a batch statistic: `forward` never looks at other rows (embeddings stay row-independent,
as gradient caching and masked views need); the trainer updates it explicitly once per
micro-batch (`update`), all-reduced so every rank holds the same value, and it is saved with
the weights.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
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


class EmbeddingCentre(nn.Module):
    """Running means `[H, M, d]` (head x modality) subtracted from the head outputs.

    `update(sums, counts)` folds one batch's per-(head, modality) sums of the *uncentred*
    outputs into the means: `mean <- m * mean + (1 - m) * batch_mean`, the first update sets
    the mean outright (`seen`); pairs without rows in the batch keep their mean.
    """

    def __init__(self, heads: int, modalities: int, dim: int, momentum: float) -> None:
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"model.centre_momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(heads, modalities, dim))
        self.register_buffer("seen", torch.zeros(heads, modalities, dtype=torch.bool))

    @torch.no_grad()
    def update(self, sums: torch.Tensor, counts: torch.Tensor) -> None:
        """`sums [H, M, d]`, `counts [H, M]` of uncentred outputs (already all-reduced)."""
        has = counts > 0
        batch = sums / counts.clamp(min=1).unsqueeze(-1).to(sums.dtype)
        weight = torch.where(self.seen, 1.0 - self.momentum, 1.0)
        weight = torch.where(has, weight, 0.0).unsqueeze(-1).to(self.mean.dtype)
        self.mean.add_(weight * (batch.to(self.mean.dtype) - self.mean))
        self.seen |= has


class HeadSet(nn.Module):
    """`heads[head][modality]`: a projection per head and modality (COLA head optional),
    each output centred by `centre` when `centre_momentum` is given."""

    def __init__(
        self, in_dims: dict[str, int], names: list[str], hidden: int, out_dim: int, cola: bool,
        centre_momentum: float | None = None,
    ) -> None:
        super().__init__()
        self.names = list(names)
        self.modalities = list(in_dims)
        self.centre = (EmbeddingCentre(len(names), len(in_dims), out_dim, centre_momentum)
                       if centre_momentum is not None else None)
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
        out = self.heads[name][modality](x)
        if self.centre is None:
            return out
        return out - self.centre.mean[self.names.index(name), self.modalities.index(modality)]

    @torch.no_grad()
    def update_centre(self, embeddings: dict[str, torch.Tensor], present: torch.Tensor,
                      slot_modality: torch.Tensor) -> None:
        """Fold one batch's centred outputs into the running means (no-op without centring).

        `embeddings[head] [B, S, d]` as `project` returned them (zeros where absent),
        `present [B, S]`, `slot_modality [S]` (index into this set's modalities). Sums and
        counts are all-reduced over the process group when one is initialised, so every rank
        must call this at the same point."""
        if self.centre is None:
            return
        c = self.centre
        sums = torch.zeros_like(c.mean, dtype=torch.float32)
        counts = torch.zeros(c.mean.shape[:2], device=c.mean.device)
        for h, name in enumerate(self.names):
            for m in range(len(self.modalities)):
                rows = present & (slot_modality == m).unsqueeze(0)
                n = rows.sum()
                # the outputs were centred with the current mean: add it back for n rows
                sums[h, m] = embeddings[name][rows].float().sum(0) + n * c.mean[h, m].float()
                counts[h, m] = n
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(sums)
            dist.all_reduce(counts)
        c.update(sums, counts)

    def project_cola(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        if self.cola is None:
            raise ValueError("the model has no COLA head (set model.cola = true)")
        return self.cola[modality](x)
