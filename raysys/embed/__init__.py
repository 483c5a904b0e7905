"""Batch embedding of archives with an exported model (`raysys embed`, docs/embedding.md).

    from raysys.embed import EmbedConfig, run_embed, verify_output
    summary = run_embed("RUN/model", "s3://bucket/archive", "s3://bucket/emb", EmbedConfig())
    report = verify_output("s3://bucket/emb", "s3://bucket/archive")
"""

from raysys.embed.config import EmbedConfig, EmbedError
from raysys.embed.job import run_embed
from raysys.embed.verify import verify_output

__all__ = ["EmbedConfig", "EmbedError", "run_embed", "verify_output"]
