"""Batch embedding as a Ray job: the same arguments as `raysys embed`.

    ray job submit --working-dir . -- python jobs/embed.py \
        --checkpoint s3://bucket/run/model --archive s3://bucket/archive --output s3://bucket/emb

Inside a job, RAY_ADDRESS points at the cluster, so the driver joins it. Exit codes as
`raysys embed`: 2 a user error (one message), 3 an incomplete run (rerun to finish).
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import raysys  # noqa: F401  (installed on the cluster)
except ImportError:  # the job's working dir is the repository: import from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.embed.cli import main

if __name__ == "__main__":
    sys.exit(main())
