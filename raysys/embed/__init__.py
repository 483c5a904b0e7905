"""Batch embedding of archives with an exported model (`raysys embed`, docs/embedding.md).

    from raysys.embed import EmbedConfig, run_embed, verify_output
    summary = run_embed("RUN/model", "s3://bucket/archive", "s3://bucket/emb", EmbedConfig())
    report = verify_output("s3://bucket/emb", "s3://bucket/archive")
"""

from raysys._lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    "EmbedConfig": "config", "EmbedError": "config", "EmbedIncomplete": "config",
    "run_embed": "job",
    "verify_output": "verify",
})
