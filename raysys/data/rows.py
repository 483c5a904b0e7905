"""The per-row work of the pipeline: plan rows in, batch-contract rows out (runs in Ray tasks).

For each planned entity: read + decode each view it has, build the augmented views, and record
per view what went wrong. A view that fails is marked absent and its reason travels in the
`error.<view>` column (the entity keeps its other views); nothing raises out of a row, so one
bad file never fails a block or drops its neighbours (Ray's `max_errored_blocks` would).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import torch

from raysys.data.config import DataConfig
from raysys.data.decode import DecodeError, load_audio, load_image
from raysys.data.features import TabularStats
from raysys.data.views import ViewBuilder, ViewError

ERROR_PREFIX = "error."
INFO_COLUMNS = ("info.audio_seconds", "info.audio_rate", "info.image_height", "info.image_width",
                "info.log_rows")
PASS_THROUGH = ("key", "entity_id", "epoch", "position", "relevance_entity_id", "relevance",
                "relevance_mask", "relevance_query_view", "relevance_candidate_view")
UNEXPECTED = "unexpected error"
_LOGS_CACHE_SIZE = 2
_logs_cache: dict[str, Any] = {}  # ObjectRef hex -> Logs, per worker process


def _fetch_logs(ref: Any) -> Any:
    """The logs behind an ObjectRef, fetched once per worker process and reused by its tasks.

    Ray Data deserialises a fresh RowBuilder for every task; without this cache every task
    would `ray.get` and unpickle the whole logs frame again before building its rows. Keyed by
    the ref, so a new pipeline (new ref) never sees stale logs; at most two are kept.
    """
    key = ref.hex()
    if key not in _logs_cache:
        import ray  # only in the ObjectRef case, i.e. inside a Ray worker

        while len(_logs_cache) >= _LOGS_CACHE_SIZE:
            _logs_cache.pop(next(iter(_logs_cache)))
        _logs_cache[key] = ray.get(ref)
    return _logs_cache[key]


@functools.lru_cache(maxsize=4)
def _builder(cfg_json: str, stats_json: str | None) -> ViewBuilder:
    torch.set_num_threads(1)  # parallelism comes from Ray tasks, not intra-op threads
    cfg = DataConfig.model_validate_json(cfg_json)
    stats = TabularStats.from_dict(json.loads(stats_json)) if stats_json else None
    return ViewBuilder(cfg, stats)


def _attempt(fn: Callable[[], Any]) -> tuple[Any, str]:
    """Run one view's decode; (value, '') or (None, 'reason: detail')."""
    try:
        return fn(), ""
    except DecodeError as e:
        return None, str(e)
    except Exception as e:  # a record must never take its block down with it
        return None, f"{UNEXPECTED}: {type(e).__name__}: {e}"


class RowBuilder:
    """Callable for `Dataset.map_batches` (pandas plan batch -> dict of numpy columns)."""

    def __init__(self, cfg: DataConfig, stats: TabularStats | None, logs: Any | None) -> None:
        self.cfg_json = cfg.model_dump_json()
        self.stats_json = json.dumps(stats.to_dict()) if stats is not None else None
        self.logs = logs  # raysys.data.archive.Logs or an ObjectRef to it
        self.modalities = set(cfg.modalities)

    def _logs(self) -> Any | None:
        if self.logs is None or not hasattr(self.logs, "hex"):
            return self.logs
        return _fetch_logs(self.logs)

    def _decode(self, row: pd.Series, cfg: DataConfig) -> tuple[dict[str, Any], dict[str, str]]:
        sources: dict[str, Any] = {"audio": None, "image": None, "tabular": None}
        errors = {"audio": "", "image": "", "tabular": ""}
        info = dict.fromkeys(INFO_COLUMNS, np.nan)
        if "audio" in self.modalities and isinstance(row["audio"], str):
            got, errors["audio"] = _attempt(
                lambda: load_audio(row["audio"], sample_rate=cfg.sample_rate,
                                   timeout_s=cfg.read_timeout_s)
            )
            if got is not None:
                sources["audio"] = got[0]
                info["info.audio_seconds"] = got[1].duration_s
                info["info.audio_rate"] = got[1].source_rate
        if "image" in self.modalities and isinstance(row["image"], str):
            sources["image"], errors["image"] = _attempt(
                lambda: load_image(row["image"], timeout_s=cfg.read_timeout_s)
            )
            if sources["image"] is not None:
                info["info.image_height"], info["info.image_width"] = sources["image"].shape[:2]
        logs = self._logs()
        if ("tabular" in self.modalities and logs is not None and row["has_logs"]
                and row["key"] in logs.spans):  # has_logs: false where training withholds it
            a, b = logs.spans[row["key"]]
            sources["tabular"] = logs.frame.iloc[a:b]
            info["info.log_rows"] = b - a
        return sources | {"info": info}, errors

    def _build(self, row: pd.Series, builder: ViewBuilder, sources: dict[str, Any],
               errors: dict[str, str]) -> dict[str, Any]:
        """Build the views; a modality whose source can't be used is quarantined and dropped."""
        for _ in range(len(sources)):
            try:
                return builder.build(
                    row["key"], int(row["entity_id"]), sources["audio"], sources["image"],
                    sources["tabular"], epoch=int(row["epoch"]),
                )
            except ViewError as e:
                errors[e.modality] = f"{e.reason}: {e.detail}"
                sources[e.modality] = None
        raise RuntimeError("view building kept failing")

    def _row(self, row: pd.Series, builder: ViewBuilder, cfg: DataConfig) -> dict[str, Any]:
        sources, errors = self._decode(row, cfg)
        info = sources.pop("info")
        built, errors["build"] = _attempt(lambda: self._build(row, builder, sources, errors))
        if built is None:  # an unexpected failure: keep the entity's schema, no views
            built = builder.empty_row(row["key"], int(row["entity_id"]))
        out = dict(built)
        out.update(info)
        for view in ("audio", "image", "tabular"):
            out[ERROR_PREFIX + view] = errors[view]
        out[ERROR_PREFIX + "build"] = errors["build"]
        return out

    def __call__(self, plan: pd.DataFrame) -> dict[str, np.ndarray]:
        cfg_builder = _builder(self.cfg_json, self.stats_json)
        cfg = cfg_builder.cfg
        rows = [self._row(row, cfg_builder, cfg) for _, row in plan.iterrows()]
        out = {name: np.stack([r[name] for r in rows]) for name in rows[0]} if rows else {}
        for name in PASS_THROUGH:
            if name in plan:
                out[name] = np.stack([np.asarray(v) for v in plan[name]])
        for view in ("audio", "image"):
            out["path." + view] = plan[view].fillna("").astype(str).to_numpy()
        return out
