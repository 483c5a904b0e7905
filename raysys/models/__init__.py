"""Per-view encoders, projection / LOEV / COLA heads and the multi-view model (no Ray here)."""

from raysys.models.config import ModelConfig
from raysys.models.multimodal import EncodedViews, ModelInputs, MultiViewModel

__all__ = ["EncodedViews", "ModelConfig", "ModelInputs", "MultiViewModel"]
