"""Ray job entry point for batch embedding (same arguments as `raysys embed`).

    ray job submit --working-dir . -- python jobs/embed.py \
        --checkpoint s3://bucket/run/model --archive s3://bucket/archive --output s3://bucket/emb
"""

import sys

from raysys.embed.cli import main

if __name__ == "__main__":
    sys.exit(main())
