"""The consolidated fp32 model export that evaluation and embedding load without DeepSpeed.

    RUN/model/model.pt     state dict of `MultiViewModel` (fp32 tensors only: weights-only load)
    RUN/model/model.json   model config, model inputs, data config, tabular statistics,
                           step, model_id (sha256 of the weights), config_hash

`load_model(path)` rebuilds the model with `torch.load(weights_only=True)`: no pickled code is
ever executed from an export. (DeepSpeed's own checkpoints are unpickled with
weights_only=False on resume: whoever can write the checkpoint storage can run code there.)
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from raysys.data.config import DataConfig
from raysys.models.config import ModelConfig
from raysys.models.multimodal import ModelInputs, MultiViewModel

MODEL_FILE, META_FILE = "model.pt", "model.json"
MODEL_PREFIX = "model."  # the training module wraps the model as `.model`


def model_id(state: dict[str, torch.Tensor]) -> str:
    """sha256 over parameter names, shapes and bytes (stable across save/load)."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def config_hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


# Settings whose default changed after exports existed: an export without the key was trained
# with the old value (model.json holds the config as dumped at export time).
LEGACY_DEFAULTS: dict[tuple[str, ...], Any] = {
    ("model", "audio", "pool"): "global",
    ("model", "image", "pool"): "global",
    ("model", "centre_momentum"): None,
    ("data", "audio", "standardize"): "none",
}


def upgrade_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """Fill settings an older export predates with the values it was trained with (in place;
    the stored config_hash is left as written)."""
    for path, value in LEGACY_DEFAULTS.items():
        node = meta
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(path[-1], value)
    return meta


def model_state_from_module_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of the wrapped `MultiViewModel` (drops the objective's parameters), fp32."""
    out = {k[len(MODEL_PREFIX):]: v.float() if v.is_floating_point() else v
           for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    if not out:
        raise ValueError(f"no '{MODEL_PREFIX}*' parameters in the state dict: {list(state)[:5]}")
    return out


def export_model(out_dir: str | Path, state: dict[str, torch.Tensor], *, model_cfg: ModelConfig,
                 inputs: ModelInputs, data_cfg: DataConfig, stats: dict | None, step: int) -> dict:
    """Write model.pt + model.json atomically (temporary names, then rename)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "step": step,
        "model": model_cfg.model_dump(mode="json"),
        "inputs": asdict(inputs),
        "data": data_cfg.model_dump(mode="json"),
        "tabular_stats": stats,
        "model_id": model_id(state),
    }
    meta["config_hash"] = config_hash({k: meta[k] for k in ("model", "inputs", "data")})
    tmp_model, tmp_meta = out / (MODEL_FILE + ".tmp"), out / (META_FILE + ".tmp")
    torch.save(state, tmp_model)
    tmp_meta.write_text(json.dumps(meta, indent=1))
    tmp_model.replace(out / MODEL_FILE)
    tmp_meta.replace(out / META_FILE)  # the meta file last: its presence marks a whole export
    return meta


def build_model(meta: dict[str, Any]) -> MultiViewModel:
    """An export's model with fresh weights (its shapes, before `load_state_dict`)."""
    inputs = meta["inputs"]
    inputs = ModelInputs(**{**inputs, "modalities": tuple(inputs["modalities"]),
                            "tabular_cardinalities": tuple(inputs["tabular_cardinalities"])})
    return MultiViewModel(ModelConfig.model_validate(meta["model"]), inputs)


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[MultiViewModel, dict[str, Any]]:
    """Rebuild an exported model (a RUN folder or its `model/` folder) in eval mode."""
    path = Path(path)
    if (path / "model" / META_FILE).exists():
        path = path / "model"
    meta_file = path / META_FILE
    if not meta_file.exists():
        raise FileNotFoundError(f"{path}: no {META_FILE} (not a raysys model export)")
    meta = upgrade_meta(json.loads(meta_file.read_text()))
    model = build_model(meta)
    state = torch.load(path / MODEL_FILE, map_location=device, weights_only=True)
    model.load_state_dict(state)
    return model.to(device).eval(), meta
