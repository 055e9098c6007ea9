"""The ``overlap`` command in a process of its own, paused at an embeddings shard for a signal.

    PAUSE=during:part-00002.parquet PAUSE_FILE=PATH \
        python -m tests.support.cli_paused run --dataset ...

runs ``flows.cli.main`` with its arguments; with ``PAUSE`` it stops for good after, or halfway
through, writing that shard and creates PAUSE_FILE (see
``tests.support.extraction_worker.pause_at``),
so that a test can signal it at exactly that point.
"""

from __future__ import annotations

import os
import sys

from flows.cli import main
from tests.support.extraction_worker import pause_at

if __name__ == "__main__":
    if "PAUSE" in os.environ:
        mode, shard = os.environ["PAUSE"].split(":", 1)
        pause_at(mode, shard, os.environ["PAUSE_FILE"])
    sys.exit(main(sys.argv[1:]))
