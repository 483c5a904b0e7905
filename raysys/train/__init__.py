"""Distributed pretraining on Ray Train + DeepSpeed: config, worker loop, checkpoints, metrics."""
