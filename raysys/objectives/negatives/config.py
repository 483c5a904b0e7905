"""Typed config of the large-negative-pool machinery (`objective.negatives.*`)."""

from __future__ import annotations

from pydantic import Field

from raysys.config_base import Section


class NegativesConfig(Section):
    """How large the negative pool is and how it is kept in memory."""

    gather: bool = Field(
        False, description="score local queries against every worker's keys (all-gather w/ grad)"
    )
    queue_size: int = Field(
        0, ge=0, description="keys kept in the embedding queue as extra negatives; 0 = off"
    )
    momentum: float | None = Field(
        None,
        ge=0.0,
        lt=1.0,
        description="EMA factor m of the momentum key encoder; None = no momentum encoder",
    )
    chunk_size: int | None = Field(
        None, ge=1, description="query rows per logits block; None = full score matrix"
    )
    chunk_recompute: bool = Field(
        True,
        description="chunked backward recomputes score blocks (True) or the forward "
        "precomputes the gradients (False: fewer matmuls, keeps dq/dk until backward)",
    )
    grad_cache_sub_batch: int | None = Field(
        None, ge=1, description="rows per encoder re-run of gradient caching; None = off"
    )
