"""Targets and masks of a soft-target cross-entropy, described compactly and generated per block.

A dense `[N, M]` mask is itself quadratic (65,536² bools = 4 GiB), so the chunked loss never asks
for the whole matrix: it asks a `Targets` object for one block at a time,

    weights, mask = targets.block(rows, cols)      # [r, c] float >= 0, [r, c] bool or None

where `mask[i, j]` says column j takes part in row i's softmax (None = every column does) and
`weights[i, j]` is the unnormalised target, zero wherever the mask is False. Row i's target
distribution is `weights[i] / weights[i].sum()`; rows whose weights sum to 0 do not count.

- `DenseTargets` wraps explicit `[N, M]` tensors (small pools, graded relevance).
- `IdTargets` derives targets from ids: `weight_ij = w(group_i, group_j) * [q_id_i == k_id_j]`,
  memory O(N + M) whatever the pool size.
- `loev_positive_masks` / `loev_ids` describe the LOEV heads (dense masks vs. compact ids).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping

import torch
from torch import Tensor

Block = tuple[Tensor, Tensor | None]
NO_ID = torch.iinfo(torch.int64).min  # matches no id (entity ids are >= 0, LOEV's unique < 0)


class Targets(ABC):
    """Per-block source of (target weights, softmax mask) for an `[N, M]` score matrix."""

    shape: tuple[int, int]

    @abstractmethod
    def block(self, rows: slice, cols: slice, dtype: torch.dtype = torch.float32) -> Block:
        """Weights `[r, c]` (>= 0, zero off the mask) and mask `[r, c]` bool (None = all True)."""

    def dense(self, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """The full `[N, M]` weights and mask (quadratic memory: for tests and small pools)."""
        n, m = self.shape
        weights, mask = self.block(slice(0, n), slice(0, m), dtype)
        if mask is None:
            mask = torch.ones(n, m, dtype=torch.bool, device=weights.device)
        return weights, mask


def _check_vector(name: str, x: Tensor | None, length: int | None = None) -> None:
    if x is None:
        return
    if not isinstance(x, Tensor) or x.dim() != 1:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 1-D tensor, got {shape}")
    if length is not None and x.shape[0] != length:
        raise ValueError(f"{name} has length {x.shape[0]}, expected {length}")


class DenseTargets(Targets):
    """Explicit targets `weights [N, M]` (>= 0, bool allowed) and optional `mask [N, M]` bool.

    Weights outside the mask are ignored (set to 0). Validation reads the tensors once (a host
    sync); memory is whatever the caller already holds.
    """

    def __init__(self, weights: Tensor, mask: Tensor | None = None) -> None:
        if not isinstance(weights, Tensor) or weights.dim() != 2:
            raise ValueError(f"targets must be a 2-D [N, M] tensor, got {_shape_of(weights)}")
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
                raise ValueError(f"mask must be a bool tensor, got {_dtype_of(mask)}")
            if mask.shape != weights.shape:
                raise ValueError(
                    f"mask has shape {list(mask.shape)}, targets {list(weights.shape)}"
                )
        if weights.dtype != torch.bool:
            if not torch.isfinite(weights).all():
                raise ValueError("targets contain NaN or inf")
            if (weights < 0).any():
                raise ValueError("targets must be >= 0 (got a negative entry)")
        self.weights, self.mask = weights, mask
        self.shape = (weights.shape[0], weights.shape[1])

    def block(self, rows: slice, cols: slice, dtype: torch.dtype = torch.float32) -> Block:
        weights = self.weights[rows, cols].to(dtype)
        if self.mask is None:
            return weights, None
        mask = self.mask[rows, cols]
        return weights.masked_fill(~mask, 0.0), mask


def _shape_of(x: object) -> object:
    return list(x.shape) if isinstance(x, Tensor) else type(x).__name__


def _dtype_of(x: object) -> object:
    return x.dtype if isinstance(x, Tensor) else type(x).__name__


class IdTargets(Targets):
    """Targets from ids: `weight_ij = group_weight[q_group_i, k_group_j] * [q_ids_i == k_ids_j]`.

    Args (all 1-D, on the scores' device):
        q_ids: `[N]` int — the entity of each query row.
        k_ids: `[M]` int — the entity of each key column.
        k_valid: `[M]` bool — columns that exist (False = padding; out of every softmax).
        q_self_col: `[N]` long — a column to drop from row i's softmax (its self-pair), -1 none.
        q_group, k_group, group_weight: `[N]`, `[M]` long and `[Gq, Gk]` float >= 0 — per-pair
            weights (e.g. audio-image vs audio-log). Default 1 everywhere.
        k_negative_only: `[M]` bool — columns that may only be negatives (a memory queue).
        q_neighbour_ids, neighbour_weight: `[N, k]` int and a float > 0 — other ids that count as
            positives of row i with weight `neighbour_weight` (nearest-neighbour positives;
            `NO_ID` pads). They take the group weight like same-id pairs.

    A positive pair (same id, or a neighbour) whose weight is 0 (a zero group weight, or a
    negative-only column) is removed from the softmax: it is never used as a negative
    (false-negative guard). Memory O(N * (1 + k) + M); `block` costs O(r * c * (1 + k)).
    """

    def __init__(
        self,
        q_ids: Tensor,
        k_ids: Tensor,
        *,
        k_valid: Tensor | None = None,
        q_self_col: Tensor | None = None,
        q_group: Tensor | None = None,
        k_group: Tensor | None = None,
        group_weight: Tensor | None = None,
        k_negative_only: Tensor | None = None,
        q_neighbour_ids: Tensor | None = None,
        neighbour_weight: float = 1.0,
    ) -> None:
        _check_vector("q_ids", q_ids)
        _check_vector("k_ids", k_ids)
        n, m = q_ids.shape[0], k_ids.shape[0]
        for name, x, length in (
            ("k_valid", k_valid, m),
            ("q_self_col", q_self_col, n),
            ("q_group", q_group, n),
            ("k_group", k_group, m),
            ("k_negative_only", k_negative_only, m),
        ):
            _check_vector(name, x, length)
        for name, x in (("k_valid", k_valid), ("k_negative_only", k_negative_only)):
            if x is not None and x.dtype != torch.bool:
                raise ValueError(f"{name} must be bool, got {x.dtype}")
        _check_groups(q_group, k_group, group_weight)
        _check_neighbours(q_neighbour_ids, n, neighbour_weight)
        self.q_neighbour_ids, self.neighbour_weight = q_neighbour_ids, neighbour_weight
        self.q_ids, self.k_ids = q_ids, k_ids
        self.k_valid, self.q_self_col = k_valid, q_self_col
        self.q_group, self.k_group, self.group_weight = q_group, k_group, group_weight
        self.k_negative_only = k_negative_only
        self.shape = (n, m)

    def block(self, rows: slice, cols: slice, dtype: torch.dtype = torch.float32) -> Block:
        positive = self.q_ids[rows, None] == self.k_ids[None, cols]
        weights = positive.to(dtype)
        if self.q_neighbour_ids is not None:
            nbr = self.q_neighbour_ids[rows, :, None] == self.k_ids[None, None, cols]
            nbr = nbr.any(1) & ~positive
            weights = weights + self.neighbour_weight * nbr.to(dtype)
            positive = positive | nbr
        excluded = None  # positive pairs with zero weight
        if self.group_weight is not None:
            gw = self.group_weight.to(dtype)[self.q_group[rows]][:, self.k_group[cols]]
            weights = weights * gw
            excluded = positive & (gw == 0)
        if self.k_negative_only is not None:
            neg_only = self.k_negative_only[None, cols]
            weights = weights.masked_fill(neg_only, 0.0)
            excluded = positive & neg_only if excluded is None else excluded | (positive & neg_only)
        mask = self._column_mask(rows, cols, positive.shape)
        if excluded is not None:
            mask = ~excluded if mask is None else mask & ~excluded
        if mask is not None:
            weights = weights.masked_fill(~mask, 0.0)
        return weights, mask

    def _column_mask(self, rows: slice, cols: slice, shape: torch.Size) -> Tensor | None:
        mask = None
        if self.k_valid is not None:
            mask = self.k_valid[None, cols].expand(shape)
        if self.q_self_col is not None:
            col_index = torch.arange(cols.start, cols.stop, device=self.q_self_col.device)
            not_self = self.q_self_col[rows, None] != col_index[None, :]
            mask = not_self if mask is None else mask & not_self
        return mask


def _check_neighbours(ids: Tensor | None, n: int, weight: float) -> None:
    if ids is None:
        return
    if not isinstance(ids, Tensor) or ids.dim() != 2 or ids.shape[0] != n:
        raise ValueError(f"q_neighbour_ids must be [{n}, k], got {_shape_of(ids)}")
    if not (weight > 0 and math.isfinite(weight)):
        raise ValueError(f"neighbour_weight must be finite and > 0, got {weight}")


def _check_groups(q_group: Tensor | None, k_group: Tensor | None, weight: Tensor | None) -> None:
    given = [x is not None for x in (q_group, k_group, weight)]
    if any(given) and not all(given):
        raise ValueError("q_group, k_group and group_weight must be given together")
    if weight is None:
        return
    if weight.dim() != 2:
        raise ValueError(f"group_weight must be [Gq, Gk], got {list(weight.shape)}")
    if not torch.isfinite(weight).all() or (weight < 0).any():
        raise ValueError("group_weight must be finite and >= 0")
    for name, g, size in (
        ("q_group", q_group, weight.shape[0]),
        ("k_group", k_group, weight.shape[1]),
    ):
        if g.numel() and (g.min() < 0 or g.max() >= size):
            raise ValueError(f"{name} values must lie in [0, {size}) (group_weight's size)")


def _check_loev(entity_ids: Tensor, applied: Mapping[str, Tensor]) -> None:
    _check_vector("entity_ids", entity_ids)
    if "invariant" in applied:
        raise ValueError("an augmentation may not be named 'invariant' (the invariant head)")
    for name, flags in applied.items():
        if not isinstance(flags, Tensor) or flags.dtype != torch.bool:
            raise ValueError(f"applied[{name!r}] must be a bool tensor, got {_dtype_of(flags)}")
        _check_vector(f"applied[{name!r}]", flags, entity_ids.shape[0])


def loev_positive_masks(entity_ids: Tensor, applied: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Positive masks of the LOEV heads (Guinot et al., ICASSP 2025), dense `[V, V]` bool.

    `invariant`: views of the same entity. Head `k`: views of the same entity **and** `k`
    applied to neither view. The diagonal (a view with itself) is False everywhere.

    Shapes: entity_ids `[V]`, applied `{name: bool [V]}`. Memory O(V²) per head.
    """
    _check_loev(entity_ids, applied)
    v = entity_ids.shape[0]
    same = entity_ids[:, None] == entity_ids[None, :]
    same &= ~torch.eye(v, dtype=torch.bool, device=entity_ids.device)
    masks = {"invariant": same}
    for name, flags in applied.items():
        untouched = ~flags
        masks[name] = same & untouched[:, None] & untouched[None, :]
    return masks


def loev_ids(
    entity_ids: Tensor, applied: Mapping[str, Tensor], *, offset: int = 0
) -> dict[str, Tensor]:
    """Compact LOEV heads: per head, ids whose equality is the head's positive relation.

    Head `k` gives every view with `k` applied a unique negative id `-(1 + offset + v)`, so it
    matches nothing but itself: it stays a negative for every other row, and its own row has no
    positive once the self column is dropped (`loev_id_targets`). Entity ids must be >= 0. When
    the ids of several workers are pooled, give each worker a distinct `offset` (e.g. the global
    index of its first view) or compute the ids on the gathered arrays.

    Shapes: entity_ids `[V]`, applied `{name: bool [V]}` -> `{head: int64 [V]}`.
    """
    _check_loev(entity_ids, applied)
    if entity_ids.numel() and entity_ids.min() < 0:
        raise ValueError("loev_ids needs entity_ids >= 0 (negative ids mark unique views)")
    v = entity_ids.shape[0]
    unique = -(1 + offset + torch.arange(v, device=entity_ids.device, dtype=entity_ids.dtype))
    ids = {"invariant": entity_ids}
    for name, flags in applied.items():
        ids[name] = torch.where(flags, unique, entity_ids)
    return ids


def loev_id_targets(entity_ids: Tensor, applied: Mapping[str, Tensor]) -> dict[str, IdTargets]:
    """`{head: IdTargets}` of the views against themselves (self-pairs dropped), from `loev_ids`."""
    self_col = torch.arange(entity_ids.shape[0], device=entity_ids.device)
    return {
        head: IdTargets(ids, ids, q_self_col=self_col)
        for head, ids in loev_ids(entity_ids, applied).items()
    }
