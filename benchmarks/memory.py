"""Resident memory of a caller process holding pending relays and awaiting completed ones.

Run as `python -m benchmarks.memory --dsn DSN --prefix SCHEMA` while a worker
node runs the bench queue on that schema. It prints one JSON object on stdout.
Running in a fresh process keeps the earlier workloads' memory out of the figures.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
from pathlib import Path
from typing import Any

import relay_actors
from benchmarks.stats import Failures
from benchmarks.workers import IDLE_QUEUE, Echo
from relay_actors import Ok, Relay

INSTANCE = "bench-memory"
AWAIT_TIMEOUT_SECONDS = 120.0


def resident_bytes() -> int:
    """Return this process's resident set size (VmRSS in /proc/self/status), in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status; the memory workload needs Linux")


def measured_rss() -> int:
    gc.collect()
    return resident_bytes()


def insert_in_batches(count: int, batch: int, queue: str | None) -> list[Relay[Any]]:
    relays: list[Relay[Any]] = []
    for first in range(0, count, batch):
        numbers = range(first, min(first + batch, count))
        if queue is None:
            jobs = [Echo.new({"n": n}) for n in numbers]
        else:
            jobs = [Echo.new({"n": n}, queue=queue) for n in numbers]
        relays.extend(Relay.async_many(INSTANCE, jobs))
    return relays


def await_completed(count: int, batch: int, failures: Failures) -> None:
    """Insert `count` jobs that the worker node runs, await them all and check each result."""
    relays = insert_in_batches(count, batch, queue=None)
    results = Relay.await_many(relays, timeout=AWAIT_TIMEOUT_SECONDS)
    for n, result in enumerate(results):
        if result != Ok(n):
            failures.add(f"relay_actors job n={n}: expected Ok({n}), got {result!r:.300}")


def mailbox_statistics() -> dict[str, int]:
    mailbox = relay_actors.get_instance(INSTANCE).mailbox()
    statistics: dict[str, int] = mailbox.proxy().statistics().get(timeout=10)
    return statistics


def measure(dsn: str, prefix: str, pending: int, completed: int, batch: int) -> dict[str, Any]:
    failures = Failures()
    with relay_actors.start(
        name=INSTANCE, dsn=dsn, queues={}, plugins=[Relay], prefix=prefix, node="bench-memory"
    ):
        # One small round first, so that the mailbox, the pooled connection and
        # the codec exist before the baseline.
        await_completed(10, batch, failures)
        baseline = measured_rss()
        pending_relays = insert_in_batches(pending, batch, queue=IDLE_QUEUE)
        with_pending = measured_rss()
        await_completed(completed, batch, failures)
        after_completed = measured_rss()
        await_completed(completed, batch, failures)
        after_twice_completed = measured_rss()
        statistics = mailbox_statistics()
        del pending_relays
    return {
        "pending_relays": pending,
        "completed_per_round": completed,
        "rss_baseline_bytes": baseline,
        "rss_with_pending_bytes": with_pending,
        "bytes_per_pending_relay": (with_pending - baseline) / pending,
        "rss_after_completed_bytes": after_completed,
        "rss_after_second_completed_bytes": after_twice_completed,
        "mailbox": statistics,
        "failures": failures.as_dict(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN")
    parser.add_argument("--prefix", required=True, help="schema of the relay_actors tables")
    parser.add_argument("--pending", type=int, default=100_000, help="pending relays to hold")
    parser.add_argument(
        "--completed", type=int, default=10_000, help="completed relays to await, per round"
    )
    parser.add_argument("--batch", type=int, default=1000, help="jobs per async_many call")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.dsn, args.prefix, args.pending, args.completed, args.batch)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
