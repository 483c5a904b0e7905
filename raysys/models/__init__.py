"""Per-view encoders, projection / LOEV / COLA heads and the multi-view model (no Ray here)."""

from raysys._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "ModelConfig": "config",
    "EncodedViews": "multimodal", "ModelInputs": "multimodal", "MultiViewModel": "multimodal",
})
