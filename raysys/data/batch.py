"""The heterogeneous-view batch: the contract between the data pipeline and everything after it.

One row = one entity. Every modality has `V = data.views_per_modality` augmented views, all
computed from the same decoded source. A modality the entity lacks (or whose file was
quarantined) has `present = False` and zero tensors. Column names of the numpy batches that
Ray Data yields (flat dict, one array per column, leading dim B):

| column | dtype | shape | meaning |
|---|---|---|---|
| key | str | [B] | entity key from the manifest |
| entity_id | int64 | [B] | stable 63-bit hash of the key |
| audio | float32 | [B, V, C, F, T] | time-frequency stack per view |
| audio_present | bool | [B] |  |
| image | float32 | [B, V, 3, H, W] | normalised image per view |
| image_present | bool | [B] |  |
| tabular_num | float32 | [B, V, W, Fn] | standardised numbers, 0 where masked |
| tabular_num_mask | bool | [B, V, W, Fn] | True = observed and finite |
| tabular_cat | int64 | [B, V, W, Fc] | category ids, 0 = missing/unknown |
| tabular_row_mask | bool | [B, V, W] | True = a real log row (not padding) |
| tabular_present | bool | [B] |  |
| aug.<modality>.<name>.applied | bool | [B, V] | augmentation applied to that view |
| aug.<modality>.<name>.<param> | float32 | [B, V] | its parameter (0 when not applied) |
| relevance_entity_id | int64 | [B, K] | graded-relevance candidates' entity ids, -1 = pad |
| relevance | float32 | [B, K] | ratings 0-100 |
| relevance_mask | bool | [B, K] | True = a real candidate |
| relevance_query_view | int8 | [B, K] | rated view: 0 any, 1 audio, 2 image, 3 tabular |
| relevance_candidate_view | int8 | [B, K] | same, for the candidate |
| epoch, position | int64 | [B] | the plan's epoch (seeds augmentation) and stream position |

Diagnostic columns (dropped with `diagnostics=False`): `error.<view>` (quarantine reason, ''
= fine), `path.<view>`, `info.*` (durations, sample rates, image sizes, log rows).

`HeteroBatch.from_numpy` turns such a dict into torch tensors grouped per modality.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

MODALITIES = ("audio", "image", "tabular")
TABULAR_FIELDS = ("tabular_num", "tabular_num_mask", "tabular_cat", "tabular_row_mask")
AUG_PREFIX = "aug."


def entity_id_of(key: str) -> int:
    """Stable non-negative 63-bit id of an entity key (same on every worker and run)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def aug_column(modality: str, name: str, param: str) -> str:
    return f"{AUG_PREFIX}{modality}.{name}.{param}"


@dataclass
class ModalityViews:
    """All views of one modality. `x` is a tensor (audio, image) or a dict (tabular)."""

    x: torch.Tensor | dict[str, torch.Tensor]
    present: torch.Tensor  # bool [B]
    aug: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # name -> param -> [B,V]

    def applied(self) -> dict[str, torch.Tensor]:
        """{augmentation name: bool [B, V]} — what LOEV heads need."""
        return {name: params["applied"] for name, params in self.aug.items()}


@dataclass
class HeteroBatch:
    keys: list[str]
    entity_id: torch.Tensor  # int64 [B]
    views: dict[str, ModalityViews]
    relevance_entity_id: torch.Tensor | None = None  # int64 [B, K]
    relevance: torch.Tensor | None = None  # float32 [B, K], 0-100
    relevance_mask: torch.Tensor | None = None  # bool [B, K]
    relevance_query_view: torch.Tensor | None = None  # int8 [B, K], 0 = any view
    relevance_candidate_view: torch.Tensor | None = None  # int8 [B, K]

    @property
    def size(self) -> int:
        return len(self.keys)

    @staticmethod
    def from_numpy(batch: Mapping[str, Any], device: str | torch.device = "cpu") -> HeteroBatch:
        def t(name: str) -> torch.Tensor:
            # Ray hands out read-only views of Arrow buffers; torch needs writable memory.
            array = np.require(np.asarray(batch[name]), requirements="W")
            return torch.from_numpy(array).to(device)

        views: dict[str, ModalityViews] = {}
        for modality in MODALITIES:
            if f"{modality}_present" not in batch:
                continue
            if modality == "tabular":
                x: torch.Tensor | dict[str, torch.Tensor] = {f: t(f) for f in TABULAR_FIELDS}
            else:
                x = t(modality)
            views[modality] = ModalityViews(x=x, present=t(f"{modality}_present"))
        for column in batch:
            if not column.startswith(AUG_PREFIX):
                continue
            modality, name, param = column[len(AUG_PREFIX) :].split(".", 2)
            if modality in views:
                views[modality].aug.setdefault(name, {})[param] = t(column)
        has_rel = "relevance" in batch
        return HeteroBatch(
            keys=[str(k) for k in np.asarray(batch["key"]).tolist()],
            entity_id=t("entity_id"),
            views=views,
            relevance_entity_id=t("relevance_entity_id") if has_rel else None,
            relevance=t("relevance") if has_rel else None,
            relevance_mask=t("relevance_mask") if has_rel else None,
            relevance_query_view=t("relevance_query_view") if has_rel else None,
            relevance_candidate_view=t("relevance_candidate_view") if has_rel else None,
        )
