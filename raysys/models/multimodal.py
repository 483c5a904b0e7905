"""`MultiViewModel`: every view of every modality -> one embedding per head, plus diagnostics.

For a `HeteroBatch` with M modalities of V views each, the S = M * V "slots" are ordered
modality-major (slot `s` = modality `s // V`, view `s % V`). Every slot of every entity is
encoded (static shapes); views of an entity lacking a modality get zero inputs, and their
outputs are replaced by zeros with `torch.where`, so neither NaN nor gradient leaks from them.
Cost: one encoder pass over B * V inputs per modality, plus one branch pass per LOEV++ head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from raysys.data.batch import HeteroBatch, ModalityViews
from raysys.data.config import DataConfig
from raysys.models.audio import build_audio_encoder
from raysys.models.base import StagedEncoder, fresh_copy
from raysys.models.config import COLA_HEAD, CROSS_HEAD, INVARIANT_HEAD, ModelConfig
from raysys.models.heads import HeadSet
from raysys.models.image import build_image_encoder
from raysys.models.tabular import build_tabular_encoder

TABULAR_ZERO = {"tabular_num": 0.0, "tabular_num_mask": False, "tabular_cat": 0,
                "tabular_row_mask": False}  # fmt: skip


@dataclass(frozen=True)
class ModelInputs:
    """Input facts the model needs that come from data (not from config)."""

    modalities: tuple[str, ...] = ("audio", "image", "tabular")
    audio_channels: int = 3
    tabular_num_features: int = 0
    tabular_cardinalities: tuple[int, ...] = ()
    tabular_window: int = 16
    audio_bins: int = 64  # frequency bins F (data.audio.n_bins); the tdnn's input is C * F wide

    @staticmethod
    def from_data(
        data: DataConfig, tabular_num_features: int = 0, tabular_cardinalities: tuple[int, ...] = ()
    ) -> ModelInputs:
        return ModelInputs(
            modalities=tuple(data.modalities),
            audio_channels=len(data.audio.channels),
            audio_bins=data.audio.n_bins,
            tabular_num_features=tabular_num_features,
            tabular_cardinalities=tuple(tabular_cardinalities),
            tabular_window=data.tabular_window,
        )


@dataclass
class EncodedViews:
    """What the objective consumes. B entities, S = M * V slots, d = embed_dim.

    embeddings: head name -> `[B, S, d]` (unnormalised; zeros where not present)
    present: bool `[B, S]`; entity_id: int64 `[B]`; slot_modality: int64 `[S]`
    applied: augmentation name -> bool `[B, S]` (False on modalities that do not record it)
    backbone: modality -> `[B, V, D_m]` invariant-path features before any head (diagnostics)
    relevance_*: the batch's graded-relevance lists `[B, K]`, passed through (may be None)
    """

    embeddings: dict[str, torch.Tensor]
    present: torch.Tensor
    entity_id: torch.Tensor
    modalities: tuple[str, ...]
    views_per_modality: int
    slot_modality: torch.Tensor
    applied: dict[str, torch.Tensor] = field(default_factory=dict)
    backbone: dict[str, torch.Tensor] = field(default_factory=dict)
    relevance_entity_id: torch.Tensor | None = None
    relevance: torch.Tensor | None = None
    relevance_mask: torch.Tensor | None = None

    @property
    def num_slots(self) -> int:
        return len(self.modalities) * self.views_per_modality

    def slot_names(self) -> list[str]:
        v = self.views_per_modality
        return [f"{self.modalities[s // v]}{s % v}" for s in range(self.num_slots)]


def zero_absent(x: torch.Tensor, keep: torch.Tensor, fill: float | bool | int = 0) -> torch.Tensor:
    """`x [B, V, ...]` with rows where `keep [B]` is False replaced by `fill` (NaN-safe)."""
    keep = keep.reshape(keep.shape + (1,) * (x.dim() - 1))
    return torch.where(keep, x, torch.full_like(x, fill))


def flatten_views(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])


def branch_space(head: str) -> str:
    """The evaluation space of a LOEV++ head's branch (its last stage, before projection)."""
    return f"{head}_branch"


class MultiViewModel(nn.Module):
    def __init__(self, cfg: ModelConfig, inputs: ModelInputs) -> None:
        super().__init__()
        if not inputs.modalities:
            raise ValueError("ModelInputs.modalities is empty")
        self.cfg = cfg
        self.modalities = tuple(inputs.modalities)
        self.head_names = cfg.head_names()
        self.encoders = nn.ModuleDict({m: self._encoder(m, inputs) for m in self.modalities})
        self.branches = nn.ModuleDict()
        if cfg.loev_plus_plus:
            for head in cfg.loev_heads:
                self.branches[head] = nn.ModuleDict(
                    {m: self._branch(m, head, inputs)
                     for m in cfg.loev_plus_plus_modalities if m in self.encoders}
                )  # fmt: skip
        dims = {m: enc.out_dim for m, enc in self.encoders.items()}
        self.heads = HeadSet(dims, self.head_names, cfg.proj_hidden, cfg.embed_dim, cfg.cola,
                             cfg.centre_momentum)

    def _encoder(self, modality: str, inputs: ModelInputs) -> StagedEncoder:
        if modality == "audio":
            return build_audio_encoder(self.cfg.audio, inputs.audio_channels, inputs.audio_bins)
        if modality == "image":
            return build_image_encoder(self.cfg.image)
        if modality == "tabular":
            return build_tabular_encoder(
                self.cfg.tabular, inputs.tabular_num_features,
                list(inputs.tabular_cardinalities), inputs.tabular_window,
            )  # fmt: skip
        raise ValueError(f"ModelInputs.modalities: unknown modality {modality!r}")

    def _branch(self, modality: str, head: str, inputs: ModelInputs) -> nn.Module:
        """A LOEV++ head's own last stage: a fresh copy of the encoder's, or for an audio
        branch in `model.loev_branch_periodicity` the same stage with `Periodicity` pooling."""
        channels = self.cfg.loev_branch_periodicity.get(head, 0)
        if modality != "audio" or not channels:
            return fresh_copy(self.encoders[modality].last)
        audio = self.cfg.audio.model_copy(update={"periodicity": channels})
        return build_audio_encoder(audio, inputs.audio_channels, inputs.audio_bins).last

    def update_centre(self, encoded: EncodedViews) -> None:
        """After a training micro-batch: fold its embeddings into the running means the heads
        subtract (`model.centre_momentum`; raysys.models.heads). Every rank calls it at the
        same point (the means are all-reduced); evaluation and embedding never do."""
        self.heads.update_centre(
            {h: encoded.embeddings[h] for h in self.head_names}, encoded.present,
            encoded.slot_modality,
        )  # fmt: skip

    def output_names(self) -> list[str]:
        return self.head_names + ([COLA_HEAD] if self.cfg.cola else [])

    def branch_heads(self, modality: str) -> list[str]:
        """The LOEV++ heads with their own branch (last stage) for `modality`."""
        return [h for h, branch in self.branches.items() if modality in branch]

    def encode_modality(
        self, modality: str, views: ModalityViews
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Backbone `[B, V, D_m]` and each head's embeddings `[B, V, d]`, zeros where absent."""
        backbone, heads, _ = self._encode(modality, views, inspect=False)
        return backbone, heads

    def inspect_modality(
        self, modality: str, views: ModalityViews
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Evaluation: `encode_modality`'s backbone and heads, and from the same trunk pass
        each LOEV++ branch before its projection (`pitch_shift_branch`, ...: what the backbone
        is to the invariant head) and each trunk layer's pooled output (`layer1`, ...;
        StagedEncoder.trunk_layers), `[B, V, .]`, zeros where absent."""
        return self._encode(modality, views, inspect=True)

    def _encode(
        self, modality: str, views: ModalityViews, inspect: bool
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if modality not in self.encoders:
            raise ValueError(f"model has no encoder for {modality!r} (has {self.modalities})")
        present = views.present.bool()
        x, (b, v) = self._flat_input(modality, views.x, present)
        encoder = self.encoders[modality]
        encoder.check(x)
        trunk, layers = encoder.trunk_layers(x) if inspect else (encoder.trunk(x), {})
        backbone = encoder.last(trunk)
        branches = {h: self.branches[h][modality](trunk) for h in self.branch_heads(modality)}
        out = {h: self.heads.project(h, modality, self._head_input(h, backbone, branches))
               for h in self.head_names}  # fmt: skip
        if self.cfg.cola:
            out[COLA_HEAD] = self.heads.project_cola(modality, backbone)
        extra = {branch_space(h): t for h, t in branches.items()} | layers
        unflat = lambda t: zero_absent(t.reshape(b, v, -1), present)
        return (unflat(backbone), {k: unflat(t) for k, t in out.items()},
                {k: unflat(t) for k, t in extra.items()})

    def _head_input(
        self, head: str, backbone: torch.Tensor, branches: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """LOEV++: the head's own copy of the last stage; otherwise the shared backbone (for the
        cross head with its gradient scaled by `model.cross_backprop`; same value)."""
        if head in branches:
            return branches[head]
        share = self.cfg.cross_backprop
        if head == CROSS_HEAD and share < 1:
            return backbone * share + backbone.detach() * (1 - share)
        return backbone

    def _flat_input(
        self, modality: str, x: torch.Tensor | dict[str, torch.Tensor], present: torch.Tensor
    ) -> tuple[torch.Tensor | dict[str, torch.Tensor], tuple[int, int]]:
        if modality == "tabular":
            if not isinstance(x, dict) or set(x) != set(TABULAR_ZERO):
                got = sorted(x) if isinstance(x, dict) else type(x).__name__
                raise ValueError(f"tabular views: expected keys {sorted(TABULAR_ZERO)}, got {got}")
            b, v = x["tabular_row_mask"].shape[:2]
            fill = lambda k, t: flatten_views(zero_absent(t, present, TABULAR_ZERO[k]))
            return {k: fill(k, t) for k, t in x.items()}, (b, v)
        if not isinstance(x, torch.Tensor) or x.dim() < 3:
            raise ValueError(f"{modality} views: expected a tensor [B, V, ...], got {x!r:.80}")
        return flatten_views(zero_absent(x, present)), (x.shape[0], x.shape[1])

    def embedding_dims(self, modality: str) -> dict[str, int]:
        """What `embed` can return for `modality`, and its size: every head (`embed_dim`) and
        each LOEV++ branch before its projection (`pitch_shift_branch`: the encoder's width)."""
        if modality not in self.encoders:
            raise ValueError(f"model has no encoder for {modality!r} (has {self.modalities})")
        width = self.encoders[modality].out_dim
        return ({h: self.cfg.embed_dim for h in self.output_names()}
                | {branch_space(h): width for h in self.branch_heads(modality)})

    def embed(
        self, modality: str, views: ModalityViews, head: str = INVARIANT_HEAD,
        normalize: bool = True,
    ) -> torch.Tensor:
        """Inference: one head's embeddings `[B, V, d]` of one modality (L2-normalised), or a
        LOEV++ branch's (`embedding_dims`)."""
        names = self.embedding_dims(modality)
        if head not in names:
            raise ValueError(f"unknown head {head!r} for {modality}; the model has {list(names)}")
        _, heads, branches = self._encode(modality, views, inspect=False)  # no layer pooling
        out = heads[head] if head in heads else branches[head]
        return F.normalize(out, dim=-1) if normalize else out

    def forward(self, batch: HeteroBatch) -> EncodedViews:
        b = batch.size
        v = self._views_per_modality(batch)
        per_mod = {m: self._encode_or_zeros(m, batch, b, v) for m in self.modalities}
        cat = lambda ts: torch.cat(ts, dim=1)
        embeddings = {h: cat([per_mod[m][1][h] for m in self.modalities])
                      for h in self.output_names()}  # fmt: skip
        present = cat([per_mod[m][2].unsqueeze(1).expand(b, v) for m in self.modalities])
        device = batch.entity_id.device
        slot_mod = torch.arange(len(self.modalities), device=device).repeat_interleave(v)
        return EncodedViews(
            embeddings=embeddings, present=present, entity_id=batch.entity_id,
            modalities=self.modalities, views_per_modality=v, slot_modality=slot_mod,
            applied=self._applied(batch, b, v, device),
            backbone={m: per_mod[m][0] for m in self.modalities},
            relevance_entity_id=batch.relevance_entity_id, relevance=batch.relevance,
            relevance_mask=batch.relevance_mask,
        )  # fmt: skip

    def _views_per_modality(self, batch: HeteroBatch) -> int:
        counts = {}
        for m in self.modalities:
            if m in batch.views:
                x = batch.views[m].x
                counts[m] = (x["tabular_row_mask"] if isinstance(x, dict) else x).shape[1]
        if not counts:
            raise ValueError(f"batch has none of the model's modalities {self.modalities}")
        if len(set(counts.values())) != 1:
            raise ValueError(f"batch: views per modality differ across modalities: {counts}")
        return next(iter(counts.values()))

    def _encode_or_zeros(
        self, m: str, batch: HeteroBatch, b: int, v: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """(backbone, heads, present [B]); a modality missing from the batch is all absent."""
        if m in batch.views:
            backbone, heads = self.encode_modality(m, batch.views[m])
            return backbone, heads, batch.views[m].present.bool()
        device = batch.entity_id.device
        zeros = lambda d: torch.zeros(b, v, d, device=device)
        heads = {h: zeros(self.cfg.embed_dim) for h in self.output_names()}
        absent = torch.zeros(b, dtype=torch.bool, device=device)
        return zeros(self.encoders[m].out_dim), heads, absent

    def _applied(
        self, batch: HeteroBatch, b: int, v: int, device: torch.device
    ) -> dict[str, torch.Tensor]:
        names = {n for m in self.modalities if m in batch.views for n in batch.views[m].aug}
        out = {}
        for name in sorted(names):
            cols = []
            for m in self.modalities:
                aug = batch.views[m].aug.get(name) if m in batch.views else None
                flag = aug.get("applied") if aug else None
                if flag is None:
                    flag = torch.zeros(b, v, dtype=torch.bool, device=device)
                cols.append(flag.bool())
            out[name] = torch.cat(cols, dim=1)
        return out
