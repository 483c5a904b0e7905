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
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

Input = Tensor | Mapping[str, Tensor]
LossOut = Tensor | Mapping[str, Tensor]


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


class _RngState:
    """CPU and (if initialised) CUDA RNG state, to replay dropout in the second forward."""

    def __init__(self) -> None:
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _embed_without_graph(
    encode: Callable[[Any], Tensor], x: Input, sub_batch: int
) -> tuple[Tensor, list[tuple[slice, _RngState]]]:
    parts, record = [], []
    n = _rows(x)
    with torch.no_grad():
        for r0 in range(0, n, sub_batch):
            rows = slice(r0, min(r0 + sub_batch, n))
            record.append((rows, _RngState()))
            parts.append(encode(_slice(x, rows)))
    return torch.cat(parts), record


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
        backward: runs the backward of a scalar (pass DeepSpeed's `engine.backward`); called
            once on the loss and once per (encoder, sub-batch) surrogate.

    Returns: the loss output, detached. Parameter gradients equal those of the plain step
    (exactly, up to float summation order, when each encoder is row-wise independent).
    """
    if len(encode_fns) != len(inputs):
        raise ValueError(f"grad_cache_step: {len(encode_fns)} encoders but {len(inputs)} inputs")
    if sub_batch < 1:
        raise ValueError(f"grad_cache_step: sub_batch must be >= 1, got {sub_batch}")
    cached = [
        _embed_without_graph(f, x, sub_batch) for f, x in zip(encode_fns, inputs, strict=True)
    ]
    embeddings = [e.detach().requires_grad_() for e, _ in cached]
    out = loss_fn(*embeddings)
    backward(_loss_tensor(out))
    for f, x, emb, (_, record) in zip(encode_fns, inputs, embeddings, cached, strict=True):
        if emb.grad is None:
            continue  # the loss did not use this encoder's embeddings
        _backprop_sub_batches(f, x, emb.grad, record, backward)
    if isinstance(out, Tensor):
        return out.detach()
    return {k: v.detach() for k, v in out.items()}


def _backprop_sub_batches(
    encode: Callable[[Any], Tensor],
    x: Input,
    grad: Tensor,
    record: list[tuple[slice, _RngState]],
    backward: Callable[[Tensor], None],
) -> None:
    with torch.random.fork_rng(devices=_cuda_devices()):
        for rows, state in record:
            state.restore()
            emb = encode(_slice(x, rows))
            backward((emb * grad[rows].to(emb.dtype)).sum())


def _cuda_devices() -> list[int]:
    return list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
