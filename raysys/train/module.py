"""The module DeepSpeed wraps, and the two ways a micro-batch goes through it.

`TrainModule` holds the model and the objective's own parameters (learnable temperature, COLA
matrix) together, so one optimizer and one ZeRO partitioning cover both. Its forward has three
`part`s so that gradient caching can run the encoder and the objective as separate DeepSpeed
forwards: `"all"` (model + objective), `"encode"` (model only) and `"objective"` (the
objective on given embeddings).

    PlainStep       one forward, one `engine.backward`, one `engine.step` per micro-batch
    GradCacheStep   gradient caching: one DeepSpeed micro-step per sub-batch
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

import torch
from torch import nn

from raysys.data.batch import HeteroBatch, ModalityViews
from raysys.models.multimodal import EncodedViews, MultiViewModel
from raysys.objectives.multiview import Negatives
from raysys.objectives.negatives.config import NegativesConfig
from raysys.objectives.negatives.gradcache import (
    SubBatch,
    backprop_sub_batches,
    embed_sub_batches,
)
from raysys.objectives.objective import ContrastiveObjective

Part = Literal["all", "encode", "objective"]


def map_batch(batch: HeteroBatch, fn: Callable[[torch.Tensor], torch.Tensor],
              keys: Callable[[list[str]], list[str]] = lambda k: k) -> HeteroBatch:
    """A new batch with `fn` applied to every tensor (and `keys` to the key list)."""
    views = {}
    for name, mv in batch.views.items():
        x = {k: fn(v) for k, v in mv.x.items()} if isinstance(mv.x, dict) else fn(mv.x)
        aug = {a: {p: fn(v) for p, v in params.items()} for a, params in mv.aug.items()}
        views[name] = ModalityViews(x=x, present=fn(mv.present), aug=aug)
    opt = lambda t: None if t is None else fn(t)  # noqa: E731
    return HeteroBatch(
        keys=keys(batch.keys), entity_id=fn(batch.entity_id), views=views,
        relevance_entity_id=opt(batch.relevance_entity_id), relevance=opt(batch.relevance),
        relevance_mask=opt(batch.relevance_mask),
        relevance_query_view=opt(batch.relevance_query_view),
        relevance_candidate_view=opt(batch.relevance_candidate_view),
    )


def cast_batch(batch: HeteroBatch, dtype: torch.dtype, device: torch.device) -> HeteroBatch:
    """Floating inputs to the module's dtype/device (DeepSpeed bf16 casts the module only)."""

    def cast(t: torch.Tensor) -> torch.Tensor:
        t = t.to(device, non_blocking=True)
        return t.to(dtype) if t.is_floating_point() else t

    return map_batch(batch, cast)


def slice_batch(batch: HeteroBatch, rows: slice) -> HeteroBatch:
    """The entities `rows` of a batch (every per-entity field, relevance lists included)."""
    return map_batch(batch, lambda t: t[rows], keys=lambda k: k[rows])


def cat_encoded(parts: list[EncodedViews]) -> EncodedViews:
    """Concatenate the `EncodedViews` of consecutive sub-batches along the entity dim."""
    first = parts[0]
    cat = lambda get: torch.cat([get(p) for p in parts])  # noqa: E731
    opt = lambda get: None if get(first) is None else cat(get)  # noqa: E731
    return EncodedViews(
        embeddings={h: cat(lambda p, h=h: p.embeddings[h]) for h in first.embeddings},
        present=cat(lambda p: p.present), entity_id=cat(lambda p: p.entity_id),
        modalities=first.modalities, views_per_modality=first.views_per_modality,
        slot_modality=first.slot_modality,
        applied={k: cat(lambda p, k=k: p.applied[k]) for k in first.applied},
        backbone={m: cat(lambda p, m=m: p.backbone[m]) for m in first.backbone},
        relevance_entity_id=opt(lambda p: p.relevance_entity_id),
        relevance=opt(lambda p: p.relevance), relevance_mask=opt(lambda p: p.relevance_mask),
    )  # fmt: skip


def encode_in_sub_batches(encoder: Callable[[HeteroBatch], EncodedViews], batch: HeteroBatch,
                          sub_batch: int | None) -> EncodedViews:
    """`encoder(batch)` run `sub_batch` entities at a time (None = at once), concatenated;
    bounds the activation memory of a graph-free pass such as the momentum key encoder."""
    if sub_batch is None or sub_batch >= batch.size:
        return encoder(batch)
    parts, _ = embed_sub_batches(lambda rows: encoder(slice_batch(batch, rows)), batch.size,
                                 sub_batch)
    return cat_encoded(parts)


class TrainModule(nn.Module):
    def __init__(self, model: MultiViewModel, objective: ContrastiveObjective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def encode(self, batch: HeteroBatch) -> EncodedViews:
        encoded = self.model(batch)
        encoded.embeddings = {h: e.float() for h, e in encoded.embeddings.items()}  # loss in fp32
        return encoded

    def forward(self, inputs: HeteroBatch | EncodedViews, negatives: Negatives | None = None,
                part: Part = "all") -> Any:
        """`all`: batch -> (objective terms, EncodedViews). `encode`: batch -> (embeddings,
        EncodedViews); the embeddings dict comes first so that DeepSpeed finds (and hooks) its
        tensors. `objective`: EncodedViews -> objective terms."""
        if part == "objective":
            assert isinstance(inputs, EncodedViews)
            return self.objective(inputs, negatives)
        assert isinstance(inputs, HeteroBatch)
        encoded = self.encode(inputs)
        if part == "encode":
            return encoded.embeddings, encoded
        return self.objective(encoded, negatives), encoded


class MicroBatchStep(Protocol):
    """Forward (no backward yet: the caller checks the loss first), then backward + step."""

    def forward(self, batch: HeteroBatch, negatives: Negatives | None
                ) -> tuple[dict[str, torch.Tensor], EncodedViews]: ...

    def backward(self, out: dict[str, torch.Tensor]) -> None: ...


class PlainStep:
    """One DeepSpeed micro-step per micro-batch: activations of the whole micro-batch."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def forward(self, batch: HeteroBatch, negatives: Negatives | None
                ) -> tuple[dict[str, torch.Tensor], EncodedViews]:
        return self.engine(batch, negatives)

    def backward(self, out: dict[str, torch.Tensor]) -> None:
        self.engine.backward(out["loss"])
        self.engine.step()


class GradCacheStep:
    """Gradient caching through a DeepSpeed engine (Gao et al. 2021).

    forward:  pass 1, every sub-batch of `sub_batch` entities embedded without a graph
              (through the engine, RNG state recorded); then the objective on the concatenated
              embeddings (leaf tensors) with the configured pool (the all-gather of `gather`,
              the queue's negatives). The objective runs on the bare module, not the engine:
              its backward must not open a DeepSpeed backward of its own.
    backward: `∂L/∂E` by `torch.autograd.grad` (no parameter gradient, no DeepSpeed hook);
              then pass 3, one DeepSpeed micro-step per sub-batch: re-encode it with its RNG
              state and backpropagate the surrogate `Σ E_sub · ∂L/∂E_sub`. The first micro-step
              also backpropagates the retained loss graph itself, which gives the objective's
              own parameters (learnable temperature, COLA matrix) their gradient.

    Each sub-batch is a DeepSpeed micro-step of its own (`engine.backward(scale_wrt_gas=False)`
    then `engine.step()`), with `gradient_accumulation_steps = sub-batches * train.grad_accum`
    (`micro_steps_per_batch`), so only the last one of a step is the accumulation boundary that
    reduces (ZeRO 0/1), clips and updates; under ZeRO-2/3 each micro-step reduce-scatters its
    gradients into the partition as in ordinary accumulation. That is what makes several
    backwards per micro-batch legal: DeepSpeed asserts "Gradient computed twice" for a second
    backward inside one micro-step. Why the objective's parameters ride on the first
    micro-step: ZeRO-3 overwrites a gradient partition in the first micro-step of a window and
    adds to it afterwards, so every parameter must get its gradient there — a separate loss
    micro-step touching only the objective would leave the model's partitions holding the
    previous step's gradients. The gradients equal those of `PlainStep` up to float summation
    order (the model is row-wise independent: GroupNorm/LayerNorm, no BatchNorm). Extra cost:
    a second encoder forward, and a second objective backward when the objective has
    parameters.
    """

    def __init__(self, engine: Any, sub_batch: int, grad_accum: int) -> None:
        self.engine, self.sub_batch, self.grad_accum = engine, sub_batch, grad_accum
        self.objective_params = any(p.requires_grad for p in engine.module.objective.parameters())
        self._pending: tuple[HeteroBatch, dict[str, torch.Tensor], list[SubBatch]] | None = None

    def _embeddings(self, batch: HeteroBatch) -> dict[str, torch.Tensor]:
        return self.engine(batch, part="encode")[0]

    def _encoded(self, batch: HeteroBatch) -> EncodedViews:
        return self.engine(batch, part="encode")[1]

    def forward(self, batch: HeteroBatch, negatives: Negatives | None
                ) -> tuple[dict[str, torch.Tensor], EncodedViews]:
        parts, record = embed_sub_batches(lambda rows: self._encoded(slice_batch(batch, rows)),
                                          batch.size, self.sub_batch)
        encoded = cat_encoded(parts)
        encoded.embeddings = {h: e.detach().requires_grad_()
                              for h, e in encoded.embeddings.items()}
        out = self.engine.module(encoded, negatives, part="objective")
        self._pending = (batch, encoded.embeddings, record)
        return out, encoded

    def backward(self, out: dict[str, torch.Tensor]) -> None:
        if self._pending is None:
            raise RuntimeError("GradCacheStep.backward without a forward")
        batch, leaves, record = self._pending
        self._pending = None
        loss = out["loss"] / self.grad_accum  # engine.backward below does not scale again
        heads = list(leaves)
        found = torch.autograd.grad(loss, [leaves[h] for h in heads], allow_unused=True,
                                    retain_graph=self.objective_params)
        grads = {h: g for h, g in zip(heads, found, strict=True) if g is not None}
        if not grads:  # keep the micro-step count fixed even if no embedding got a gradient
            grads = {h: torch.zeros_like(e) for h, e in leaves.items()}
        pending_loss = [loss] if self.objective_params else []

        def micro_step(surrogate: torch.Tensor) -> None:
            if pending_loss:  # first sub-batch: the objective's parameters too
                surrogate = surrogate + pending_loss.pop()
            self.engine.backward(surrogate, scale_wrt_gas=False)
            self.engine.step()

        backprop_sub_batches(lambda rows: self._embeddings(slice_batch(batch, rows)), grads,
                             record, micro_step)


def micro_steps_per_batch(neg: NegativesConfig, batch_size: int) -> int:
    """DeepSpeed micro-steps per trainer micro-batch: 1, or the number of sub-batches."""
    if neg.grad_cache_sub_batch is None:
        return 1
    return math.ceil(batch_size / neg.grad_cache_sub_batch)


def make_step(engine: Any, neg: NegativesConfig, grad_accum: int) -> MicroBatchStep:
    if neg.grad_cache_sub_batch is None:
        return PlainStep(engine)
    return GradCacheStep(engine, neg.grad_cache_sub_batch, grad_accum)
