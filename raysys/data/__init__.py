"""Archive format, demo archive, decoding, features, augmentations and the Ray Data pipeline."""
