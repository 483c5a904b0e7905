"""Inference: model inputs (from `Preprocessor`) -> one output row per (entity, view).

`Embedder` is the `map_batches` class of the actor pool: it loads the exported model once per
actor (from bytes shipped through the object store, so actors on any node can load it) onto
the GPU when the actor was given one, else the CPU. Output rows have a `kind`:

    EMBEDDED    key, view, embedding [d] (+ per-window vectors of audio)
    QUARANTINED key, view, error, path (the view could not be read or used)
    DONE        one per entity, so the driver knows when a shard is complete
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from raysys.data.batch import ModalityViews
from raysys.embed.config import AudioWindows, EmbedError
from raysys.embed.preprocess import TABULAR_COLUMNS
from raysys.models.multimodal import MultiViewModel
from raysys.train.export import META_FILE, MODEL_FILE, load_model

EMBEDDED, QUARANTINED, DONE = 0, 1, 2


def load_from_bytes(model_bytes: bytes, meta: dict, device: str) -> MultiViewModel:
    """`load_model` on a private temporary copy of the export (weights-only load)."""
    with tempfile.TemporaryDirectory(prefix="raysys-embed-") as d:
        with open(os.path.join(d, MODEL_FILE), "wb") as f:
            f.write(model_bytes)
        with open(os.path.join(d, META_FILE), "w") as f:
            json.dump(meta, f)
        model, _ = load_model(d, device)
    return model


def pool_windows(vectors: torch.Tensor, how: str, normalize: bool) -> torch.Tensor:
    """[W, d] window embeddings -> [d] (mean or max over windows, re-normalised if asked)."""
    pooled = vectors.mean(0) if how == "mean" else vectors.max(0).values
    return F.normalize(pooled, dim=-1) if normalize else pooled


def select_device(use_gpu: bool, cuda_available: bool | None = None) -> str:
    """The torch device of an inference actor: 'cuda' when Ray gave it a GPU, else 'cpu'.

    Ray sets CUDA_VISIBLE_DEVICES to the actor's GPU, so 'cuda' is that GPU (shared with other
    actors under a fractional `gpus_per_actor`). An actor that holds a GPU but cannot use CUDA
    fails instead of silently running on the CPU while the GPU it reserved sits idle.
    """
    if not use_gpu:
        return "cpu"
    if cuda_available is None:
        cuda_available = torch.cuda.is_available()
    if not cuda_available:
        raise EmbedError(
            f"embed.gpus_per_actor > 0 gave this actor a GPU, but torch {torch.__version__} "
            f"cannot use CUDA (CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); "
            "install a CUDA build of torch on the GPU nodes or set embed.gpus_per_actor=0")
    return "cuda"


def audio_inputs(batch: dict[str, np.ndarray], ok: np.ndarray, layout: tuple[int, int]
                 ) -> tuple[list[int], torch.Tensor | None, list[int]]:
    """(rows with audio windows, their windows `[sum W, C, F, T]`, windows per row) of a
    preprocessed batch; `ok` = rows whose audio preprocessing succeeded."""
    rows = [int(i) for i in np.flatnonzero(ok) if int(batch["audio_windows"][i]) > 0]
    if not rows:
        return [], None, []
    counts = [int(batch["audio_windows"][i]) for i in rows]
    flat = np.concatenate([np.frombuffer(batch["audio"][i], np.float32) for i in rows])
    return rows, torch.from_numpy(flat.copy()).reshape(sum(counts), *layout, -1), counts


def fixed_inputs(batch: dict[str, np.ndarray], view: str, ok: np.ndarray
                 ) -> tuple[np.ndarray, Any]:
    """(rows that have `view`, its model input: a tensor `[n, ...]`, or the tabular dict)."""
    rows = np.flatnonzero(ok & np.asarray(batch[f"{view}_present"], bool))
    if view == "tabular":
        return rows, {c: torch.from_numpy(np.ascontiguousarray(batch[c][rows]))
                      for c in TABULAR_COLUMNS}
    return rows, torch.from_numpy(np.ascontiguousarray(batch[view][rows]))


class EmbedCore:
    """The model and the per-view embedding logic, usable with or without Ray."""

    def __init__(self, model: MultiViewModel, *, views: list[str], head: str, normalize: bool,
                 windows: AudioWindows, audio_layout: tuple[int, int] = (0, 0),
                 device: str = "cpu") -> None:
        self.model, self.views, self.head = model.eval(), views, head
        self.audio_layout = audio_layout  # (channels C, frequency bins F) of the audio input
        self.normalize, self.windows, self.device = normalize, windows, device
        self.dim = model.embedding_dims(views[0])[head] if views else model.cfg.embed_dim

    @torch.inference_mode()
    def _embed(self, view: str, x: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """[N, ...] inputs of one view -> [N, d] (float32, CPU), in chunks of window_batch."""
        n = len(next(iter(x.values())) if isinstance(x, dict) else x)
        step, out = self.windows.window_batch, []
        for i in range(0, n, step):
            part = ({k: t[i : i + step, None].to(self.device) for k, t in x.items()}
                    if isinstance(x, dict) else x[i : i + step, None].to(self.device))
            size = min(step, n - i)
            present = torch.ones(size, dtype=torch.bool, device=self.device)
            views = ModalityViews(x=part, present=present)
            out.append(self.model.embed(view, views, self.head, self.normalize)[:, 0].float().cpu())
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    def _audio(self, batch: dict[str, np.ndarray], ok: np.ndarray) -> dict[int, Any]:
        """Row -> (pooled [d], windows [W, d], starts [W]) for rows with audio windows."""
        rows, x, counts = audio_inputs(batch, ok, self.audio_layout)
        if not rows:
            return {}
        vectors = torch.split(self._embed("audio", x), counts)
        return {i: (pool_windows(v, self.windows.pool, self.normalize), v,
                    np.frombuffer(batch["audio_starts"][i], np.float32))
                for i, v in zip(rows, vectors, strict=True)}

    def _fixed(self, view: str, batch: dict[str, np.ndarray], ok: np.ndarray) -> dict[int, Any]:
        rows, x = fixed_inputs(batch, view, ok)
        if not len(rows):
            return {}
        return dict(zip(rows.tolist(), self._embed(view, x), strict=True))

    def __call__(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """A batch of preprocessed entities -> output rows (dicts), see the module doc."""
        keys = [str(k) for k in batch["key"]]
        out: list[dict[str, Any]] = []
        for view in self.views:
            errors = np.asarray(batch[f"error.{view}"], dtype=object)
            ok = errors == ""
            got = self._audio(batch, ok) if view == "audio" else self._fixed(view, batch, ok)
            for i, key in enumerate(keys):
                base = {"key": key, "view": view, "shard": int(batch["shard"][i])}
                if not ok[i]:
                    out.append(base | {"kind": QUARANTINED, "error": str(errors[i]),
                                       "path": str(batch[f"path.{view}"][i])})
                elif i in got:
                    out.append(base | self._row(view, got[i]))
        out += [{"key": k, "view": "", "shard": int(batch["shard"][i]), "kind": DONE}
                for i, k in enumerate(keys)]
        return out

    def _row(self, view: str, value: Any) -> dict[str, Any]:
        if view != "audio":
            return {"kind": EMBEDDED, "embedding": value.numpy()}
        pooled, windows, starts = value
        return {"kind": EMBEDDED, "embedding": pooled.numpy(), "windows": windows.numpy(),
                "starts": starts}


def rows_to_columns(rows: list[dict[str, Any]], dim: int) -> dict[str, np.ndarray]:
    """Output rows -> fixed-type numpy columns (ragged window vectors as float32 bytes)."""
    zeros, none = np.zeros(dim, np.float32), np.zeros(0, np.float32)
    col = lambda name, default: [r.get(name, default) for r in rows]
    return {
        "key": np.array(col("key", ""), dtype=object),
        "view": np.array(col("view", ""), dtype=object),
        "shard": np.array(col("shard", -1), dtype=np.int64),
        "kind": np.array(col("kind", DONE), dtype=np.int8),
        "embedding": np.stack([np.asarray(e, np.float32) for e in col("embedding", zeros)])
        if rows else np.zeros((0, dim), np.float32),
        "error": np.array(col("error", ""), dtype=object),
        "path": np.array(col("path", ""), dtype=object),
        "windows": np.array([np.asarray(w, np.float32).tobytes() for w in col("windows", none)],
                            dtype=object),
        "starts": np.array([np.asarray(s, np.float32).tobytes() for s in col("starts", none)],
                           dtype=object),
    }


class Embedder:
    """`map_batches` class for the actor pool: the model is loaded once per actor."""

    def __init__(self, model_ref: Any, meta: dict, views: list[str], head: str, normalize: bool,
                 windows: AudioWindows, use_gpu: bool, torch_threads: int = 1) -> None:
        import ray

        torch.set_num_threads(max(1, torch_threads))
        device = select_device(use_gpu)
        model_bytes = ray.get(model_ref) if hasattr(model_ref, "hex") else model_ref
        model = load_from_bytes(model_bytes, meta, device)
        self.core = make_core(model, meta, views=views, head=head, normalize=normalize,
                              windows=windows, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return rows_to_columns(self.core(batch), self.core.dim)


def audio_layout(meta: dict) -> tuple[int, int]:
    """(channels C, frequency bins F) of an export's audio input."""
    audio = meta["data"]["audio"]
    return len(audio["channels"]), int(audio["n_bins"])


def make_core(model: MultiViewModel, meta: dict, **kwargs: Any) -> EmbedCore:
    """An EmbedCore with the audio input layout of the export's data config."""
    return EmbedCore(model, audio_layout=audio_layout(meta), **kwargs)
