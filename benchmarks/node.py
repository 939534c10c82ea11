"""Run a relay_actors worker node for the benchmark: `python -m benchmarks.node ARGS`.

Runs `relay-actors --log-level WARNING worker ARGS`, plus one guard: the node
stops when its stdin closes, so it never outlives the benchmark process.
"""

from __future__ import annotations

import sys

from benchmarks.processes import stop_when_parent_exits
from relay_actors.cli import main

if __name__ == "__main__":
    stop_when_parent_exits()
    sys.exit(main(["--log-level", "WARNING", "worker", *sys.argv[1:]]))
