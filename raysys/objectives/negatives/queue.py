"""MoCo-style memory of recent key embeddings, identical on every worker, plus an EMA key encoder.

Typical step (the current keys must not be in the queue while they are scored):

    keys_all, ids_all, negative_only = queue.extend(k, k_ids)      # [M + K, d], [M + K], [M + K]
    targets = IdTargets(q_ids, ids_all, k_negative_only=negative_only)
    loss = info_nce(q, keys_all, positive_mask=targets, chunk_size=...)
    queue.enqueue(k, k_ids)                                        # after the loss, no grad

Queued keys carry the entity id they came from; `k_negative_only` removes a queued key of the
query's own entity from the softmax instead of using it as a (false) negative.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from raysys.objectives.negatives.gather import all_gather_no_grad

NO_ID = -(2**63)
"""Id stored for keys enqueued without ids: matches no entity id (ids are >= 0, LOEV's > NO_ID)."""


class EmbeddingQueue(nn.Module):
    """Ring buffer of the most recent `size` keys `[size, dim]` and their entity ids `[size]`.

    `enqueue` all-gathers the keys of every rank (no gradient) in rank order, so every rank
    holds the identical queue. The buffers are persistent: the queue is part of `state_dict()`
    and is restored exactly by `load_state_dict()` (resume gives the same negatives). Memory
    `size * dim * itemsize` plus 8 bytes per id.
    """

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"EmbeddingQueue needs size >= 1 and dim >= 1, got {size}, {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("keys", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ids", torch.full((size,), NO_ID, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return int(self.filled.item())

    def negatives(self) -> Tensor:
        """The queued keys `[K_filled, dim]` (no gradient)."""
        return self.keys[: len(self)]

    def negative_ids(self) -> Tensor:
        """Entity ids of the queued keys `[K_filled]` (`NO_ID` where none was given)."""
        return self.ids[: len(self)]

    @torch.no_grad()
    def enqueue(self, keys: Tensor, ids: Tensor | None = None) -> None:
        """Append every rank's `keys [n, dim]` and `ids [n]`; the oldest beyond `size` go."""
        if keys.dim() != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"enqueue: keys must be [n, {self.dim}], got {list(keys.shape)}")
        if ids is None:
            ids = torch.full((keys.shape[0],), NO_ID, dtype=torch.long, device=keys.device)
        if ids.shape != (keys.shape[0],):
            raise ValueError(f"enqueue: ids must be [{keys.shape[0]}], got {list(ids.shape)}")
        keys, ids = all_gather_no_grad(keys), all_gather_no_grad(ids.long())
        keys, ids = keys[-self.size :], ids[-self.size :]
        n = keys.shape[0]
        slots = (self.ptr + torch.arange(n, device=self.ptr.device)) % self.size
        self.keys[slots] = keys.to(self.keys)
        self.ids[slots] = ids.to(self.ids.device)
        self.ptr.copy_((self.ptr + n) % self.size)
        self.filled.copy_(torch.clamp(self.filled + n, max=self.size))

    def extend(self, keys: Tensor, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keys `[M, d]` followed by the queue: `(keys [M+K, d], ids [M+K], negative_only [M+K])`.

        Pass `negative_only` as `IdTargets(k_negative_only=...)` (false-negative guard).
        """
        if keys.dim() != 2 or keys.shape[1] != self.dim or ids.shape != (keys.shape[0],):
            raise ValueError(
                f"extend: keys must be [M, {self.dim}] and ids [M], got "
                f"{list(keys.shape)} and {list(ids.shape)}"
            )
        queued = self.negatives().to(keys.dtype)
        all_keys = torch.cat([keys, queued])
        all_ids = torch.cat([ids.long(), self.negative_ids().to(ids.device)])
        negative_only = torch.zeros(all_keys.shape[0], dtype=torch.bool, device=keys.device)
        negative_only[keys.shape[0] :] = True
        return all_keys, all_ids, negative_only


class MomentumEncoder(nn.Module):
    """EMA copy of an encoder (MoCo key encoder): `θ_ema ← m θ_ema + (1 - m) θ_online`.

    Its parameters never require grad and its forward runs under `no_grad`. Buffers (e.g.
    BatchNorm statistics) are copied from the online module at each `update`. It is a module,
    so the trainer checkpoints it with the model. Under ZeRO-3 the online parameters are
    partitioned: gather them (DeepSpeed `GatheredParameters`) around `update`.
    """

    def __init__(self, online: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(online)
        self.module.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: nn.Module, m: float) -> None:
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"momentum m must be in [0, 1], got {m}")
        ema_params = dict(self.module.named_parameters())
        online_params = dict(online.named_parameters())
        if ema_params.keys() != online_params.keys():
            raise ValueError("MomentumEncoder.update: online module has different parameters")
        for name, p in online_params.items():
            ema_params[name].lerp_(p.detach().to(ema_params[name]), 1.0 - m)
        ema_buffers = dict(self.module.named_buffers())
        for name, b in online.named_buffers():
            ema_buffers[name].copy_(b)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with torch.no_grad():
            return self.module(*args, **kwargs)
