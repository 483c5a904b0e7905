"""A sweep as a Ray job: the same arguments as `raysys sweep`.

    ray job submit --working-dir . -- python jobs/sweep.py \
        --config configs/sweep.yaml --archive s3://bucket/archive --out /home/ray/sweeps/a
    ray job submit --working-dir . -- python jobs/sweep.py --resume /home/ray/sweeps/a

Inside a job, RAY_ADDRESS points at the cluster, so the driver joins it instead of starting a
local instance. The sweep folder (`--out`) is local to the node that runs the driver (Tune's
state, trial run folders, results); put trial checkpoints on shared storage with
`train.storage_path=s3://...`. The sweep folder must be absolute (a relative one would land
in the job's temporary working dir: refused). A user error (config, archive, paths, cluster
size) ends the job FAILED with one message, exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import raysys  # noqa: F401  (installed on the cluster)
except ImportError:  # the job's working dir is the repository: import from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from raysys.cli import add_sweep_args, cmd_sweep, job_entry

build_parser, main = job_entry("jobs/sweep.py", "raysys sweep (for `ray job submit`)",
                               add_sweep_args, cmd_sweep)

if __name__ == "__main__":
    sys.exit(main())
