"""The entity plan: which entity is read when, decided on the driver before any file is decoded.

A plan is a small table, one row per (epoch, entity) in stream order, holding everything a
decode task needs except the bytes: key, entity id, file locations, the graded-relevance list,
the epoch (which seeds the augmentations) and the row's global position in the stream. Because
the order is fixed here, a stream can be resumed exactly: `EpochPlan.rows(start=n)` skips the
first n rows without touching them.

Split: an entity is held out for evaluation when `hash(key, seed) < eval_fraction`, so the
split is stable when the archive grows and identical on every worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from raysys.data.archive import ArchiveInfo, Relevance
from raysys.data.batch import entity_id_of

Split = Literal["train", "eval", "all"]
VIEW_CODES = {None: 0, "audio": 1, "image": 2, "tabular": 3}
PRESENCE = {"audio": "audio", "image": "image", "tabular": "has_logs"}  # modality -> the
# column that says an entity has it: a file location, or whether it has log rows


def is_eval(entity_ids: np.ndarray, eval_fraction: float, seed: int) -> np.ndarray:
    """Deterministic held-out membership from the entity id (uniform in [0, 1))."""
    mixed = (entity_ids.astype(np.uint64) ^ np.uint64(seed * 0x9E3779B97F4A7C15 % 2**64))
    mixed = (mixed * np.uint64(0xBF58476D1CE4E5B9)) >> np.uint64(11)
    return (mixed.astype(np.float64) / float(2**53)) < eval_fraction


def _uniform(entity_ids: np.ndarray, *salt: int) -> np.ndarray:
    """A uniform number in [0, 1) per entity id, independent across salts (splitmix64's
    finaliser over the id and the salt's own seed sequence)."""
    mixed = entity_ids.astype(np.uint64) ^ np.random.SeedSequence(salt).generate_state(
        1, np.uint64)[0]
    with np.errstate(over="ignore"):
        mixed = (mixed ^ (mixed >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        mixed = (mixed ^ (mixed >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    mixed ^= mixed >> np.uint64(31)
    return (mixed >> np.uint64(11)).astype(np.float64) / float(2**53)


def _relevance_lists(
    relevance: Relevance | None, keys: list[str], k: int
) -> dict[str, np.ndarray]:
    """Per entity: candidate keys/ids, ratings, view codes and mask, padded to k (best first)."""
    n = len(keys)
    out = {
        "relevance_key": np.full((n, k), "", dtype=object),
        "relevance_entity_id": np.full((n, k), -1, dtype=np.int64),
        "relevance": np.zeros((n, k), dtype=np.float32),
        "relevance_mask": np.zeros((n, k), dtype=bool),
        "relevance_query_view": np.zeros((n, k), dtype=np.int8),
        "relevance_candidate_view": np.zeros((n, k), dtype=np.int8),
    }
    if relevance is None or relevance.frame.empty:
        return out
    row_of = {key: i for i, key in enumerate(keys)}
    frame = relevance.frame.sort_values(
        ["query", "relevance"], ascending=[True, False], kind="stable"
    )
    for query, group in frame.groupby("query", sort=False):
        i = row_of.get(str(query))
        if i is None:
            continue
        top = group.head(k)
        m = len(top)
        candidates = top["candidate"].astype(str).tolist()
        out["relevance_key"][i, :m] = candidates
        out["relevance_entity_id"][i, :m] = [entity_id_of(c) for c in candidates]
        out["relevance"][i, :m] = top["relevance"].to_numpy(dtype=np.float32)
        out["relevance_mask"][i, :m] = True
        out["relevance_query_view"][i, :m] = [VIEW_CODES[v] for v in _views(top["query_view"])]
        out["relevance_candidate_view"][i, :m] = [
            VIEW_CODES[v] for v in _views(top["candidate_view"])
        ]
    return out


def _views(column: pd.Series) -> list[str | None]:
    return [None if pd.isna(v) else str(v) for v in column.tolist()]


@dataclass
class EntityTable:
    """One row per usable entity of the archive with its split and relevance list."""

    frame: pd.DataFrame  # key, entity_id, audio, image, has_logs, split
    relevance: dict[str, np.ndarray]  # row-aligned with frame

    def __len__(self) -> int:
        return len(self.frame)

    @staticmethod
    def build(info: ArchiveInfo, *, max_candidates: int, eval_fraction: float, seed: int
              ) -> EntityTable:
        m = info.manifest
        ids = np.array([entity_id_of(k) for k in m.keys], dtype=np.int64)
        spans = info.logs.spans if info.logs is not None else {}
        frame = pd.DataFrame(
            {
                "key": m.keys,
                "entity_id": ids,
                "audio": m.views["audio"],
                "image": m.views["image"],
                "has_logs": [k in spans for k in m.keys],
                "split": np.where(is_eval(ids, eval_fraction, seed), "eval", "train"),
            }
        )
        return EntityTable(frame, _relevance_lists(info.relevance, m.keys, max_candidates))

    def select(self, split: Split) -> EntityTable:
        if split == "all":
            return self
        return self.rows((self.frame["split"] == split).to_numpy())

    def present(self, modality: str) -> np.ndarray:
        """Which rows have a view of `modality`."""
        values = self.frame[PRESENCE[modality]]
        return values.to_numpy(bool) if modality == "tabular" else values.notna().to_numpy()

    def for_training(self, modalities: list[str], *, withhold: float, incomplete: str,
                     seed: int) -> EntityTable:
        """This table as training sees it. `withhold`: the share of rows whose view of each
        modality is hidden, drawn per (entity, modality) from the id and seed. `incomplete`:
        `mask` keeps every row (the loss skips the missing pairs, as for the archive's own
        missing views), `drop` keeps only the rows with a view of every configured modality."""
        table = self
        if withhold > 0:
            frame = self.frame.copy()
            ids = frame["entity_id"].to_numpy()
            for i, (modality, column) in enumerate(PRESENCE.items()):
                if modality in modalities:
                    hidden = _uniform(ids, seed, 0xA11CE, i) < withhold
                    frame.loc[hidden, column] = False if modality == "tabular" else None
            table = EntityTable(frame, self.relevance)
        if incomplete == "mask":
            return table
        return table.rows(np.stack([table.present(m) for m in modalities]).all(axis=0))

    def rows(self, keep: np.ndarray) -> EntityTable:
        return EntityTable(self.frame[keep].reset_index(drop=True),
                           {name: a[keep] for name, a in self.relevance.items()})

    def candidate_rows(self) -> list[np.ndarray]:
        """Per row: the rows of this table that are in its graded-relevance list."""
        row_of = {int(e): i for i, e in enumerate(self.frame["entity_id"].to_numpy())}
        ids, mask = self.relevance["relevance_entity_id"], self.relevance["relevance_mask"]
        return [
            np.array([row_of[int(e)] for e in ids[i][mask[i]] if int(e) in row_of], np.int64)
            for i in range(len(self.frame))
        ]

    def labels(self, info: ArchiveInfo) -> pd.DataFrame:
        """Evaluation-only label columns, row-aligned with this table."""
        labels = info.manifest.labels.assign(key=info.manifest.keys).set_index("key")
        return labels.loc[self.frame["key"]].reset_index()


def grouped_order(candidates: list[np.ndarray], group: int, rng: np.random.Generator
                  ) -> np.ndarray:
    """A permutation in which each query is followed by up to `group - 1` entities drawn at
    random from its own relevance list (each entity appears once per epoch).

    Graded-relevance lists only train where a query meets its candidates in one batch; with a
    plain shuffle a 16-candidate list out of n entities puts ~16 B / n of them there.
    """
    n = len(candidates)
    taken = np.zeros(n, dtype=bool)
    out: list[int] = []
    for i in rng.permutation(n):
        if taken[i]:
            continue
        taken[i] = True
        out.append(int(i))
        free = [int(c) for c in rng.permutation(candidates[i]) if not taken[c]][: group - 1]
        taken[free] = True
        out.extend(free)
    return np.asarray(out, dtype=np.int64)


@dataclass
class EpochPlan:
    """Stream order over `epochs` passes of an EntityTable (shuffled per epoch by seed).

    `group > 1` orders each epoch by `grouped_order` (queries next to their candidates).
    """

    table: EntityTable
    epochs: int
    seed: int
    shuffle: bool = True
    group: int = 0
    _candidates: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.table) * self.epochs

    def order(self, epoch: int) -> np.ndarray:
        n = len(self.table)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng([self.seed, epoch, 0x5EED])
        if self.group <= 1:
            return rng.permutation(n)
        if self._candidates is None:
            self._candidates = self.table.candidate_rows()
        return grouped_order(self._candidates, self.group, rng)

    def rows(self, *, start: int = 0, stop: int | None = None) -> pd.DataFrame:
        """Plan rows [start, stop) of the stream: the table's columns + epoch + position."""
        n = len(self.table)
        stop = len(self) if stop is None else min(stop, len(self))
        if n == 0 or start >= stop:
            return self._frame(np.zeros(0, np.int64), np.zeros(0, np.int64), start)
        first, last = start // n, (stop - 1) // n
        index = np.concatenate([self.order(e) for e in range(first, last + 1)])
        epochs = np.repeat(np.arange(first, last + 1), n)
        lo = start - first * n
        sl = slice(lo, lo + (stop - start))
        return self._frame(index[sl], epochs[sl], start)

    def _frame(self, index: np.ndarray, epochs: np.ndarray, start: int) -> pd.DataFrame:
        frame = self.table.frame.iloc[index].reset_index(drop=True)
        frame["epoch"] = epochs
        frame["position"] = np.arange(start, start + len(index), dtype=np.int64)
        for name, array in self.table.relevance.items():
            frame[name] = list(array[index])
        return frame
