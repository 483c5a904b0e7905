"""Pretraining as a Ray job: the same arguments as `raysys pretrain`.

    ray job submit --working-dir . -- python jobs/pretrain.py \
        --config configs/demo.yaml --archive s3://bucket/archive --out /home/ray/runs/a \
        --steps 1000 train.storage_path=s3://bucket/ckpt

Inside a job, RAY_ADDRESS points at the cluster, so the driver joins it instead of starting a
local instance. The run folder (`--out`) is local to the node that runs the driver and must be
absolute (a relative one would land in the job's temporary working dir: refused); put
checkpoints on shared storage with `train.storage_path=s3://...` (docs/cluster.md). A user
error (config, archive, paths, cluster size) ends the job FAILED with one message, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import raysys  # noqa: F401  (installed on the cluster)
except ImportError:  # the job's working dir is the repository: import from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.cli import add_pretrain_args, cmd_pretrain, job_entry

build_parser, main = job_entry("jobs/pretrain.py", "raysys pretraining (for `ray job submit`)",
                               add_pretrain_args, cmd_pretrain)

if __name__ == "__main__":
    sys.exit(main())
