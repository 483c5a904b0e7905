"""In-process embedding of an archive's entities for evaluation, and the classic features.

The model sees exactly what `raysys embed` gives it (the same `Preprocessor`: augmentation
off, each audio file cut into `clip_seconds` windows covering all of it), and keeps more:
per modality the backbone and every head, window embeddings mean-pooled per entity (heads
L2-normalised before and after pooling, as `raysys embed` does). No Ray: evaluation sets are
a few thousand entities, decoded once and shared by every model evaluated on them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from raysys.data.batch import ModalityViews
from raysys.data.config import DataConfig
from raysys.data.decode import DecodeError, load_audio, load_image
from raysys.data.pipeline import Pipeline
from raysys.embed.config import AudioWindows
from raysys.embed.embedder import audio_inputs, fixed_inputs
from raysys.embed.preprocess import Preprocessor
from raysys.eval.classic import audio_features, image_features, log_features, log_vocabulary
from raysys.eval.measure import FUSED, Spaces, fuse_concat, fuse_mean
from raysys.models.config import INVARIANT_HEAD
from raysys.models.multimodal import MultiViewModel, branch_space

BACKBONE = "backbone"


def entity_frame(pipe: Pipeline, split: str) -> pd.DataFrame:
    """key, audio, image, has_logs, shard (0) of the entities to evaluate, in plan order."""
    frame = pipe.entities.select(split).frame  # type: ignore[arg-type]
    return frame[["key", "audio", "image", "has_logs"]].assign(shard=0).reset_index(drop=True)


def preprocess(pipe: Pipeline, data: DataConfig, stats: dict | None, frame: pd.DataFrame,
               batch_size: int, windows: AudioWindows) -> list[dict[str, np.ndarray]]:
    """The model inputs of every entity (embed's preprocessing), in batches."""
    pre = Preprocessor(data, stats, pipe.info.logs, windows)
    batches = []
    for i in range(0, len(frame), batch_size):
        batches.append(pre(frame.iloc[i : i + batch_size]))
        _progress("preprocessed", min(i + batch_size, len(frame)), len(frame))
    return batches


_last_said = [0.0]


def _progress(what: str, done: int, total: int, every_s: float = 10.0) -> None:
    """A line on stderr at most every `every_s` seconds, and at the end."""
    now = time.monotonic()
    if done == total or now - _last_said[0] >= every_s:
        _last_said[0] = now
        print(f"[evaluate] {what} {done}/{total} entities", file=sys.stderr, flush=True)


def encode_views(model: MultiViewModel, modality: str, x: Any, layers: bool = False
                 ) -> dict[str, torch.Tensor]:
    """{backbone, head...}: `[n, d]` of n single views (heads L2-normalised); with `layers`
    also, from the same pass, each LOEV++ branch before its projection
    (`pitch_shift_branch`, ...) and each trunk layer's pooled output (`layer1`, ...;
    MultiViewModel.inspect_modality)."""
    n = len(next(iter(x.values()))) if isinstance(x, dict) else len(x)
    views = ModalityViews(x=x, present=torch.ones(n, dtype=torch.bool))
    if layers:
        backbone, heads, inspected = model.inspect_modality(modality, views)
    else:
        (backbone, heads), inspected = model.encode_modality(modality, views), {}
    out = {BACKBONE: backbone[:, 0].float()}
    out.update({h: F.normalize(e[:, 0].float(), dim=-1) for h, e in heads.items()})
    out.update({k: t[:, 0].float() for k, t in inspected.items()})
    return out


def _audio_rows(model: MultiViewModel, batch: dict[str, np.ndarray], ok: np.ndarray,
                layout: tuple[int, int]) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    rows, x, counts = audio_inputs(batch, ok, layout)
    if not rows:
        return
    per_window = encode_views(model, "audio", x[:, None], layers=True)
    split = {name: torch.split(t, counts) for name, t in per_window.items()}
    heads = set(model.output_names())
    for j, i in enumerate(rows):
        pooled = {name: parts[j].mean(0) for name, parts in split.items()}
        yield i, {n: (F.normalize(t, dim=-1) if n in heads else t) for n, t in pooled.items()}


def _fixed_rows(model: MultiViewModel, modality: str, batch: dict[str, np.ndarray],
                ok: np.ndarray) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    rows, x = fixed_inputs(batch, modality, ok)
    if not len(rows):
        return
    x = {c: t[:, None] for c, t in x.items()} if isinstance(x, dict) else x[:, None]
    out = encode_views(model, modality, x, layers=True)
    for j, i in enumerate(rows):
        yield int(i), {name: t[j] for name, t in out.items()}


def audio_windows(batches: list[dict[str, np.ndarray]], layout: tuple[int, int]
                  ) -> list[torch.Tensor | None]:
    """Every entity's audio windows `[n_windows, C, F, T]` (None without readable audio), in
    batch order: the supervised baseline's training inputs."""
    out: list[torch.Tensor | None] = []
    for batch in batches:
        ok = np.asarray(batch["error.audio"], dtype=object) == ""
        rows, x, counts = audio_inputs(batch, ok, layout)
        mine = [None] * len(batch["key"])
        if rows:
            for i, part in zip(rows, torch.split(x, counts), strict=True):
                mine[i] = part
        out += mine
    return out


@torch.no_grad()
def embed_model(name: str, model: MultiViewModel, batches: list[dict[str, np.ndarray]],
                layout: tuple[int, int]) -> Spaces:
    """Spaces of one model over preprocessed batches: the invariant head per modality, per
    modality the backbone, every LOEV++ branch and every head for the factor probes, and the
    mean fusion and cross-modal retrieval in the shared head (`cross` when the model has
    one)."""
    model = model.eval()
    n = sum(len(b["key"]) for b in batches)
    found: dict[str, dict[int, dict[str, torch.Tensor]]] = {m: {} for m in model.modalities}
    start = 0
    for batch in batches:
        for m in model.modalities:
            ok = np.asarray(batch[f"error.{m}"], dtype=object) == ""
            rows = (_audio_rows(model, batch, ok, layout) if m == "audio"
                    else _fixed_rows(model, m, batch, ok))
            found[m].update({start + i: v for i, v in rows})
        start += len(batch["key"])
    present = {m: np.isin(np.arange(n), list(found[m])) for m in model.modalities}
    probe: dict[str, dict[str, np.ndarray]] = {}
    layers: dict[str, dict[str, np.ndarray]] = {}
    for m, rows in found.items():
        branches = [branch_space(h) for h in model.branch_heads(m)]
        names = [BACKBONE, *branches, *model.output_names()]
        first = next(iter(rows.values()), {})
        dims = {k: model.encoders[m].out_dim if k in (BACKBONE, *branches) else
                model.cfg.embed_dim for k in names} | {k: len(t) for k, t in first.items()
                                                        if k not in names}
        table = {k: np.zeros((n, d), np.float32) for k, d in dims.items()}
        for i, vectors in rows.items():
            for k, t in vectors.items():
                table[k][i] = t.numpy()
        probe[m] = {k: table[k] for k in names}
        layers[m] = {k: x for k, x in table.items() if k not in names}
    emb = {m: probe[m][INVARIANT_HEAD] for m in model.modalities}
    shared = model.cfg.shared_head()
    cross = {m: probe[m][shared] for m in model.modalities} if shared != INVARIANT_HEAD else None
    fused, any_present = fuse_mean(cross or emb, present)
    return Spaces(name, {**emb, FUSED: fused}, {**present, FUSED: any_present}, probe,
                  retrieval=cross, layers=layers)


def classic_spaces(pipe: Pipeline, frame: pd.DataFrame, modalities: list[str],
                   sample_rate: int) -> Spaces:
    """The hand-crafted baseline (raysys.eval.classic) of every entity; unreadable files are
    absent, as in the model's spaces. Fused = concatenation of the z-scored modalities; the
    factor probes read the features as the modality's `backbone`."""
    feats: dict[str, dict[int, np.ndarray]] = {m: {} for m in modalities}
    logs = pipe.info.logs
    vocab = log_vocabulary(logs.frame, logs.categorical_cols) if logs is not None else {}
    for i, row in enumerate(frame.itertuples(index=False)):
        try:
            if "audio" in feats and isinstance(row.audio, str):
                wave, _ = load_audio(row.audio, sample_rate=sample_rate)
                feats["audio"][i] = audio_features(wave, sample_rate)
        except DecodeError:
            pass
        try:
            if "image" in feats and isinstance(row.image, str):
                feats["image"][i] = image_features(load_image(row.image))
        except DecodeError:
            pass
        if "tabular" in feats and logs is not None and row.key in logs.spans:
            a, b = logs.spans[row.key]
            feats["tabular"][i] = log_features(logs.frame.iloc[a:b], logs.numeric_cols, vocab)
        _progress("classic features of", i + 1, len(frame))
    n = len(frame)
    emb, present = {}, {}
    for m, rows in feats.items():
        if not rows:
            continue
        dim = len(next(iter(rows.values())))
        emb[m] = np.zeros((n, dim), np.float32)
        for i, v in rows.items():
            emb[m][i] = np.nan_to_num(v)
        present[m] = np.isin(np.arange(n), list(rows))
    fused, any_present = fuse_concat(emb, present)
    probe = {m: {BACKBONE: x} for m, x in emb.items()}  # the features play the backbone's part
    return Spaces("classic", {**emb, FUSED: fused}, {**present, FUSED: any_present},
                  probe_spaces=probe, comparable=False)
