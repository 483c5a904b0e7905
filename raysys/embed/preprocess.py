"""Deterministic evaluation preprocessing for embedding (runs in Ray tasks, no model here).

The training pipeline's evaluation path (`augment.enabled=False`, one view) with the export's
data config and tabular statistics, except for audio: instead of one centre crop, a file is cut
into windows of `clip_seconds` (hop `audio.hop_seconds`; the last window is aligned to the end of
the file so windows cover all of it; a file shorter than one window is zero-padded), and each
window gets the training features. Per entity the output row holds, for each embedded view,
its model input or the reason it failed (`error.<view>`, '' = fine). Ragged audio windows travel
as float32 bytes plus a count, so every column has a fixed type.
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
from raysys.data.features import AudioFeaturizer, TabularStats, clip_samples
from raysys.data.views import ViewBuilder, ViewError
from raysys.embed.config import AudioWindows

TABULAR_COLUMNS = ("tabular_num", "tabular_num_mask", "tabular_cat", "tabular_row_mask")
UNEXPECTED = "unexpected error"


def window_starts(n: int, length: int, hop: int, max_windows: int | None = None) -> np.ndarray:
    """Start samples of the windows over a signal of n samples.

    Starts 0, hop, 2 hop, ... while the window fits; if the file's end is not covered, one more
    window aligned to the end. n <= length gives the single window 0 (zero-padded). With
    `max_windows`, that many starts evenly spaced over the full list (first and last kept).
    """
    if n <= length:
        return np.zeros(1, dtype=np.int64)
    starts = np.arange(0, n - length + 1, hop, dtype=np.int64)
    if starts[-1] + length < n:
        starts = np.append(starts, n - length)
    if max_windows is not None and len(starts) > max_windows:
        starts = starts[np.round(np.linspace(0, len(starts) - 1, max_windows)).astype(int)]
    return starts


def cut_windows(wave: np.ndarray, starts: np.ndarray, length: int) -> np.ndarray:
    """[len(starts), length] float32 windows (zero-padded past the end)."""
    out = np.zeros((len(starts), length), dtype=np.float32)
    for i, s in enumerate(starts):
        piece = wave[s : s + length]
        out[i, : len(piece)] = piece
    return out


@functools.lru_cache(maxsize=4)
def _builder(cfg_json: str, stats_json: str | None) -> ViewBuilder:
    cfg = DataConfig.model_validate_json(cfg_json)
    stats = TabularStats.from_dict(json.loads(stats_json)) if stats_json else None
    return ViewBuilder(cfg, stats, torch_threads=1)


def _attempt(fn: Callable[[], Any]) -> tuple[Any, str]:
    """(value, '') or (None, 'reason: detail'); nothing raises out of one record."""
    try:
        return fn(), ""
    except DecodeError as e:
        return None, str(e)
    except ViewError as e:
        return None, f"unusable {e.modality}: {e}"
    except Exception as e:
        return None, f"{UNEXPECTED}: {type(e).__name__}: {e}"


class Preprocessor:
    """Plan rows (pandas: key, shard, audio, image) -> model inputs (dict of numpy columns)."""

    def __init__(self, data_cfg: DataConfig, stats: dict | None, logs: Any,
                 windows: AudioWindows) -> None:
        self.cfg_json = data_cfg.model_dump_json()
        self.stats_json = json.dumps(stats) if stats else None
        self.views = list(data_cfg.modalities)
        self.logs = logs  # raysys.data.archive.Logs, or an ObjectRef to it
        self.windows = windows

    def _logs(self) -> Any:
        if self.logs is not None and hasattr(self.logs, "hex"):
            import ray

            self.logs = ray.get(self.logs)
        return self.logs

    def _audio(self, uri: str, builder: ViewBuilder) -> dict[str, Any]:
        cfg = builder.cfg
        featurizer: AudioFeaturizer = builder.featurizer
        wave, _ = load_audio(uri, sample_rate=cfg.sample_rate)
        if not np.isfinite(wave).all() or wave.size == 0:
            raise ViewError("audio", "waveform is empty or not finite")
        length = clip_samples(cfg)
        hop = round((self.windows.hop_seconds or cfg.clip_seconds) * cfg.sample_rate)
        starts = window_starts(wave.size, length, max(hop, 1), self.windows.max_windows)
        step = self.windows.window_batch
        feats = [featurizer(torch.from_numpy(cut_windows(wave, starts[i : i + step], length)))
                 for i in range(0, len(starts), step)]
        x = torch.cat(feats).numpy().astype(np.float32)
        return {"audio": x.tobytes(), "audio_windows": np.int32(len(starts)),
                "audio_starts": (starts / cfg.sample_rate).astype(np.float32).tobytes()}

    def _image(self, uri: str, builder: ViewBuilder) -> dict[str, Any]:
        row = builder.build("", 0, image=load_image(uri))
        return {"image": row["image"][0], "image_present": np.bool_(True)}

    def _tabular(self, key: str, builder: ViewBuilder) -> dict[str, Any] | None:
        logs = self._logs()
        if logs is None or key not in logs.spans:  # the plan's has_logs is False then too
            return None
        a, b = logs.spans[key]
        row = builder.build(key, 0, log_rows=logs.frame.iloc[a:b])
        return {c: row[c][0] for c in TABULAR_COLUMNS} | {"tabular_present": np.bool_(True)}

    def _empty(self, builder: ViewBuilder) -> dict[str, Any]:
        """Column defaults for an entity with no usable view."""
        out: dict[str, Any] = {}
        if "audio" in self.views:
            out |= {"audio": b"", "audio_windows": np.int32(0), "audio_starts": b""}
        empty = builder.empty_row("", 0)
        for view, cols in (("image", ("image",)), ("tabular", TABULAR_COLUMNS)):
            if view in self.views:
                out |= {c: empty[c][0] for c in cols} | {f"{view}_present": np.bool_(False)}
        return out

    def _row(self, entity: pd.Series, builder: ViewBuilder) -> dict[str, Any]:
        out = self._empty(builder)
        sources = {"audio": entity.get("audio"), "image": entity.get("image"), "tabular": None}
        for view in self.views:
            got, error = None, ""
            if view == "tabular" and entity["has_logs"]:
                got, error = _attempt(lambda: self._tabular(entity["key"], builder))
            elif isinstance(sources[view], str):
                fn = self._audio if view == "audio" else self._image
                got, error = _attempt(lambda fn=fn, uri=sources[view]: fn(uri, builder))
            if got:
                out.update(got)
            out[f"error.{view}"] = error
            out[f"path.{view}"] = sources[view] if isinstance(sources[view], str) else ""
        return out

    def __call__(self, plan: pd.DataFrame) -> dict[str, np.ndarray]:
        builder = _builder(self.cfg_json, self.stats_json)
        rows = [self._row(entity, builder) for _, entity in plan.iterrows()]
        out = {"key": plan["key"].astype(str).to_numpy(dtype=object),
               "shard": plan["shard"].to_numpy(dtype=np.int64)}
        for name in rows[0] if rows else []:
            values = [r[name] for r in rows]
            if isinstance(values[0], (bytes, str)):
                out[name] = np.array(values, dtype=object)
            else:
                out[name] = np.stack([np.asarray(v) for v in values])
        return out
