"""The key side of every term: this worker's views, or every worker's (all-gather).

Queries are always the local entities; keys come from a `ViewPool`. With `gather=True` the
embeddings are all-gathered with gradient (each worker's keys get the gradient of every
worker's use of them) and the masks, ids and augmentation flags without; `offset` is the pool
row of this worker's first entity. Without a process group the pool is the local batch.
Memory: world_size x the local embeddings of each head used.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch

from raysys.models.multimodal import EncodedViews
from raysys.objectives.negatives.gather import all_gather_no_grad, all_gather_with_grad, rank


@dataclass
class ViewPool:
    """emb: head -> `[M, S, d]`; present `[M, S]`; entity_id `[M]`; applied: name -> `[M, S]`."""

    emb: dict[str, torch.Tensor]
    present: torch.Tensor
    entity_id: torch.Tensor
    applied: dict[str, torch.Tensor]
    offset: int = 0

    @property
    def size(self) -> int:
        return self.entity_id.shape[0]


def local_offset(n: int, device: torch.device) -> int:
    """Index of this worker's first row in the rank-ordered gathered pool."""
    sizes = all_gather_no_grad(torch.tensor([n], device=device))
    return int(sum(sizes.tolist()[: rank()]))


def build_pool(encoded: EncodedViews, heads: Iterable[str], gather: bool) -> ViewPool:
    """The keys of `heads` (local, or gathered across workers when `gather`)."""
    emb = {h: encoded.embeddings[h] for h in heads}
    if not gather:
        return ViewPool(emb, encoded.present, encoded.entity_id, dict(encoded.applied))
    b, s = encoded.present.shape
    flat = lambda t: t.reshape(b, -1)
    unflat = lambda t, *shape: t.reshape(-1, *shape)
    return ViewPool(
        emb={h: unflat(all_gather_with_grad(flat(t)), s, t.shape[-1]) for h, t in emb.items()},
        present=all_gather_no_grad(encoded.present),
        entity_id=all_gather_no_grad(encoded.entity_id),
        applied={k: all_gather_no_grad(v) for k, v in encoded.applied.items()},
        offset=local_offset(b, encoded.present.device),
    )
