"""Shared helpers of the embedding tests: a seeded export, the tiny settings, comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd

from raysys.config import load_config
from raysys.embed.config import EmbedConfig

# 2 cores: 0.5 CPU per preprocessing task and per actor (see configs/tiny.yaml)
RUN = {"decode_cpus": 0.5, "cpus_per_actor": 0.5, "progress_every_s": 1.0}


def tiny_export(archive: str, out: str, modalities: list[str] | None = None) -> dict:
    """A seeded, untrained export of the tiny model sized for `archive` (trainer's format)."""
    from raysys.embed.reference import random_export

    overrides = [f"data.modalities=[{','.join(modalities)}]"] if modalities else []
    cfg = load_config("configs/tiny.yaml", overrides)
    return random_export(archive, out, cfg.data, cfg.model, seed=0)


def embed_cfg(**kwargs) -> EmbedConfig:
    return EmbedConfig.model_validate({**RUN, **kwargs})


def read_output(out: str) -> pd.DataFrame:
    """All shards of an output, sorted by (key, view), through pyarrow dataset discovery."""
    import pyarrow.dataset as pads

    from raysys.data import fs

    filesystem, path = fs.resolve(out)
    table = pads.dataset(path, filesystem=filesystem, format="parquet").to_table()
    return table.to_pandas().sort_values(["key", "view"], kind="stable").reset_index(drop=True)


def assert_same_embeddings(got: pd.DataFrame, ref: pd.DataFrame, atol: float = 1e-6) -> None:
    assert got["key"].tolist() == ref["key"].tolist()
    assert got["view"].tolist() == ref["view"].tolist()
    a = np.stack(got["embedding"].map(np.asarray)).astype(np.float32)
    b = np.stack(ref["embedding"].map(np.asarray))
    np.testing.assert_allclose(a, b, atol=atol)
