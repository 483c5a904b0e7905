"""Contrastive objectives: loss primitives, targets, chunked logits, large negative pools.

Pure PyTorch (no Ray). Public loss API: `raysys.losses`.
"""
