"""Without Ray: a randomly initialised model export for an archive, and the plain
single-process embedding loop (the benchmark's baseline and the tests' reference).

`plain_embed` runs exactly the job's preprocessing and inference code on the same files, one
batch after another in this process, and returns what the job would write (without shards).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from raysys.data.config import DataConfig
from raysys.data.pipeline import open_archive
from raysys.embed.config import EmbedConfig
from raysys.embed.embedder import EMBEDDED, load_from_bytes, make_core
from raysys.embed.plan import plan_job
from raysys.embed.preprocess import Preprocessor
from raysys.models.config import ModelConfig
from raysys.models.multimodal import ModelInputs, MultiViewModel
from raysys.train.export import export_model


def random_export(archive: str, out: str | Path, data: DataConfig, model: ModelConfig,
                  seed: int = 0) -> dict[str, Any]:
    """Export a seeded, untrained `MultiViewModel` sized for `archive` (the trainer's format:
    tabular statistics of the archive's training split, as `pretrain` saves them)."""
    pipe = open_archive(archive, data)
    stats = pipe.stats
    cards = tuple(len(stats.vocab(c)) + 1 for c in stats.categorical_columns) if stats else ()
    inputs = ModelInputs.from_data(data, len(stats.numeric_columns) if stats else 0, cards)
    torch.manual_seed(seed)
    net = MultiViewModel(model, inputs)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    return export_model(out, state, model_cfg=model, inputs=inputs, data_cfg=data,
                        stats=stats.to_dict() if stats else None, step=0)


def plain_embed(checkpoint: str, archive: str, cfg: EmbedConfig | None = None,
                torch_threads: int | None = None) -> pd.DataFrame:
    """key, view, embedding (float32 [d]) for every embedded (key, view), sorted."""
    cfg = cfg or EmbedConfig()
    plan = plan_job(checkpoint, archive, cfg)
    pre = Preprocessor(plan.export.data_config(plan.views), plan.export.meta["tabular_stats"],
                       plan.info.logs, cfg.audio)
    model = load_from_bytes(plan.export.model_bytes, plan.export.meta, "cpu")
    core = make_core(model, plan.export.meta, views=plan.views, head=cfg.head,
                     normalize=cfg.normalize, windows=cfg.audio)
    rows: list[dict[str, Any]] = []
    frame = plan.entities
    for i in range(0, len(frame), cfg.batch_size):
        batch = pre(frame.iloc[i : i + cfg.batch_size])
        if torch_threads is not None:  # the preprocessing pins torch to 1 thread
            torch.set_num_threads(torch_threads)
        rows += [r for r in core(batch) if r["kind"] == EMBEDDED]
    out = pd.DataFrame({"key": [r["key"] for r in rows], "view": [r["view"] for r in rows],
                        "embedding": [np.asarray(r["embedding"], np.float32) for r in rows]})
    return out.sort_values(["key", "view"], kind="stable").reset_index(drop=True)
