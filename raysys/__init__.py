"""raysys: Ray-native multimodal contrastive pretraining."""

__version__ = "0.1.0"
