"""The module DeepSpeed wraps: the model and the objective's own parameters (learnable
temperature, COLA matrix) together, so one optimizer and one ZeRO partitioning cover both."""

from __future__ import annotations

import torch
from torch import nn

from raysys.data.batch import HeteroBatch, ModalityViews
from raysys.models.multimodal import EncodedViews, MultiViewModel
from raysys.objectives.multiview import Negatives
from raysys.objectives.objective import ContrastiveObjective


def cast_batch(batch: HeteroBatch, dtype: torch.dtype, device: torch.device) -> HeteroBatch:
    """Floating inputs to the module's dtype/device (DeepSpeed bf16 casts the module only)."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=True)
        return t.to(dtype) if t.is_floating_point() else t

    views = {}
    for name, mv in batch.views.items():
        x = {k: cast(v) for k, v in mv.x.items()} if isinstance(mv.x, dict) else cast(mv.x)
        aug = {a: {p: cast(v) for p, v in params.items()} for a, params in mv.aug.items()}
        views[name] = ModalityViews(x=x, present=cast(mv.present), aug=aug)
    opt = lambda t: None if t is None else cast(t)  # noqa: E731
    return HeteroBatch(
        keys=batch.keys, entity_id=cast(batch.entity_id), views=views,
        relevance_entity_id=opt(batch.relevance_entity_id), relevance=opt(batch.relevance),
        relevance_mask=opt(batch.relevance_mask),
        relevance_query_view=opt(batch.relevance_query_view),
        relevance_candidate_view=opt(batch.relevance_candidate_view),
    )


class TrainModule(nn.Module):
    def __init__(self, model: MultiViewModel, objective: ContrastiveObjective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, batch: HeteroBatch, negatives: Negatives | None = None
                ) -> tuple[dict[str, torch.Tensor], EncodedViews]:
        encoded = self.model(batch)
        embeddings = {h: e.float() for h, e in encoded.embeddings.items()}  # loss math in fp32
        encoded.embeddings = embeddings
        return self.objective(encoded, negatives), encoded
