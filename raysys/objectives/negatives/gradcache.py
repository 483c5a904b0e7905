"""Gradient caching (GradCache, Gao et al. 2021): a large contrastive batch, small activations.

    1. embed every input without a graph, sub-batch by sub-batch (RNG state recorded);
    2. loss on the full embeddings, backward to the embeddings only: `g = ∂L/∂E` (plus the
       gradients of any parameters inside the loss, e.g. a learnable temperature);
    3. re-run each encoder per sub-batch with the recorded RNG state (identical dropout) and
       backpropagate the surrogate `Σ (E_sub · g_sub)`, whose parameter gradient is exactly
       the sub-batch's share of `∂L/∂θ`.

Activation memory is that of one sub-batch; the cost is a second forward of every encoder.
Caveats: layers that mix rows (BatchNorm in train mode) see sub-batches, not the full batch;
with fp16 dynamic loss scaling the hook would scale twice — use bf16/fp32.

Two levels:
- `grad_cache_step`: the whole step for plain torch encoders (one backward per call);
- `embed_sub_batches` / `backprop_sub_batches`: passes 1 and 3 over any row-sliceable input
  and an encoder returning a tensor or a dict of tensors (heads). The DeepSpeed trainer
  (`raysys.train.module.GradCacheStep`) drives these, running each backward as a DeepSpeed
  micro-step.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

Input = Tensor | Mapping[str, Tensor]
LossOut = Tensor | Mapping[str, Tensor]
Embedded = Tensor | Mapping[str, Tensor]
T = TypeVar("T")


def _rows(x: Input) -> int:
    if isinstance(x, Tensor):
        return x.shape[0]
    sizes = {v.shape[0] for v in x.values()}
    if len(sizes) != 1:
        raise ValueError(f"grad_cache_step: dict input has fields of different lengths {sizes}")
    return sizes.pop()


def _slice(x: Input, rows: slice) -> Input:
    if isinstance(x, Tensor):
        return x[rows]
    return {k: v[rows] for k, v in x.items()}


class RngState:
    """CPU and (if initialised) CUDA RNG state, to replay dropout in the second forward."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


@dataclass
class SubBatch:
    """Rows of one sub-batch and the RNG state its first (graph-free) forward started from."""

    rows: slice
    rng: RngState


def sub_batch_rows(n: int, sub_batch: int) -> list[slice]:
    """`[0, n)` in consecutive slices of `sub_batch` rows (the last may be shorter)."""
    if sub_batch < 1:
        raise ValueError(f"grad caching: sub_batch must be >= 1, got {sub_batch}")
    return [slice(r0, min(r0 + sub_batch, n)) for r0 in range(0, n, sub_batch)]


def embed_sub_batches(
    encode: Callable[[slice], T], n: int, sub_batch: int
) -> tuple[list[T], list[SubBatch]]:
    """Pass 1: `encode(rows)` for each sub-batch of `n` rows under `no_grad`.

    Returns each sub-batch's output (the caller concatenates them) and the record that
    `backprop_sub_batches` replays."""
    parts, record = [], []
    with torch.no_grad():
        for rows in sub_batch_rows(n, sub_batch):
            record.append(SubBatch(rows, RngState()))
            parts.append(encode(rows))
    return parts, record


def surrogate(emb: Embedded, grad: Embedded, rows: slice) -> Tensor | None:
    """`Σ E_sub · g_sub` over every tensor (head) that has a cached gradient; None if none has.

    Its gradient w.r.t. the encoder parameters is the sub-batch's share of `∂L/∂θ`."""
    if isinstance(emb, Tensor):
        assert isinstance(grad, Tensor)
        return (emb * grad[rows].to(emb.dtype)).sum()
    assert isinstance(grad, Mapping)
    terms = [(emb[h] * g[rows].to(emb[h].dtype)).sum() for h, g in grad.items()]
    return torch.stack(terms).sum() if terms else None


def backprop_sub_batches(
    encode: Callable[[slice], Embedded],
    grad: Embedded,
    record: list[SubBatch],
    backward: Callable[[Tensor], None],
) -> None:
    """Pass 3: re-run `encode` per sub-batch with its recorded RNG state and call `backward`
    on its surrogate (one call per sub-batch). `grad` holds `∂L/∂E` of the full rows (a dict:
    only the heads listed). The global RNG continues afterwards as if pass 3 had not run."""
    with torch.random.fork_rng(devices=_cuda_devices()):
        for sub in record:
            sub.rng.restore()
            loss = surrogate(encode(sub.rows), grad, sub.rows)
            if loss is not None:
                backward(loss)


def _loss_tensor(out: LossOut) -> Tensor:
    if isinstance(out, Tensor):
        return out
    if "loss" not in out:
        raise ValueError("grad_cache_step: loss_fn returned a mapping without a 'loss' key")
    return out["loss"]


def grad_cache_step(
    encode_fns: Sequence[Callable[[Any], Tensor]],
    inputs: Sequence[Input],
    loss_fn: Callable[..., LossOut],
    sub_batch: int,
    backward: Callable[[Tensor], None] = lambda t: t.backward(),
) -> LossOut:
    """One forward/backward of `loss_fn(*[f(x) for f, x in zip(encode_fns, inputs)])`.

    Args:
        encode_fns: one encoder per input, `[n, ...] -> [n, d]` (tensor or dict-of-tensor input).
        inputs: the full batch of each encoder, split along dim 0 into `sub_batch` rows.
        loss_fn: embeddings -> scalar loss, or a mapping with a 'loss' key (named terms).
        backward: runs the backward of a scalar; called once on the loss and once per
            (encoder, sub-batch) surrogate. For DeepSpeed use `raysys.train.module.GradCacheStep`
            (each backward must be its own DeepSpeed micro-step).

    Returns: the loss output, detached. Parameter gradients equal those of the plain step
    (exactly, up to float summation order, when each encoder is row-wise independent).
    """
    if len(encode_fns) != len(inputs):
        raise ValueError(f"grad_cache_step: {len(encode_fns)} encoders but {len(inputs)} inputs")
    if sub_batch < 1:
        raise ValueError(f"grad_cache_step: sub_batch must be >= 1, got {sub_batch}")
    cached = []
    for f, x in zip(encode_fns, inputs, strict=True):
        parts, record = embed_sub_batches(lambda rows, f=f, x=x: f(_slice(x, rows)), _rows(x),
                                          sub_batch)
        cached.append((torch.cat(parts), record))
    embeddings = [e.detach().requires_grad_() for e, _ in cached]
    out = loss_fn(*embeddings)
    backward(_loss_tensor(out))
    for f, x, emb, (_, record) in zip(encode_fns, inputs, embeddings, cached, strict=True):
        if emb.grad is None:
            continue  # the loss did not use this encoder's embeddings
        backprop_sub_batches(lambda rows, f=f, x=x: f(_slice(x, rows)), emb.grad, record,
                             backward)
    if isinstance(out, Tensor):
        return out.detach()
    return {k: v.detach() for k, v in out.items()}


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
