"""One run of every workload, on a fresh schema, for relay_actors and the floor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from benchmarks.floor import FloorSide
from benchmarks.relay_bench import RelaySide, memory_workload
from benchmarks.server import fresh_schema, wait_for_backends_to_exit, wal_counters, wal_per_job
from benchmarks.statement_floor import StatementFloorSide
from benchmarks.stats import Failures

logger = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Sizes:
    """The size of each workload."""

    latency_rounds: int
    warmup_rounds: int
    caller_threads: int
    small_jobs: int
    large_jobs: int
    bulk_batch: int
    await_many_jobs: int
    pending_relays: int
    completed_relays: int
    memory_batch: int
    idle_samples: int


FULL = Sizes(
    latency_rounds=500,
    warmup_rounds=20,
    caller_threads=4,
    small_jobs=5_000,
    large_jobs=20_000,
    bulk_batch=500,
    await_many_jobs=10_000,
    pending_relays=100_000,
    completed_relays=10_000,
    memory_batch=1_000,
    idle_samples=300,
)

QUICK = Sizes(
    latency_rounds=50,
    warmup_rounds=5,
    caller_threads=4,
    small_jobs=500,
    large_jobs=2_000,
    bulk_batch=100,
    await_many_jobs=1_000,
    pending_relays=5_000,
    completed_relays=1_000,
    memory_batch=500,
    idle_samples=30,
)


class Side(Protocol):
    """One system under test: relay_actors or the floor."""

    name: str

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def reset(self) -> None: ...
    def backend_patterns(self) -> list[str]: ...


def run_phase(
    dsn: str, side: Side, label: str, measure: Callable[[], dict[str, Any]], wal_jobs: int | None
) -> dict[str, Any]:
    """Start the side, measure, stop it; with `wal_jobs`, add WAL counts per job.

    The side's connections are closed before the second WAL reading, because a
    backend reports its WAL statistics when it exits or when it has been idle a while.
    """
    logger.info("%s: %s", side.name, label)
    try:
        side.start()
        before = wal_counters(dsn) if wal_jobs else None
        result = measure()
    finally:
        side.stop()
    if wal_jobs:
        wait_for_backends_to_exit(dsn, side.backend_patterns())
        result["wal"] = wal_per_job(before, wal_counters(dsn), wal_jobs)
    side.reset()
    failures = result["failures"]
    if isinstance(failures, Failures):
        result["failures"] = failures.as_dict()
    return result


def run_once(dsn: str, sizes: Sizes, index: int, bouncer_dsn: str | None = None) -> dict[str, Any]:
    """Run every workload once; return the figures of each side by workload name.

    With `bouncer_dsn`, relay_actors also runs the latency and the smaller
    throughput workloads through that PgBouncer.
    """
    with fresh_schema(dsn) as schema:
        relay = RelaySide(dsn, schema)
        floor = FloorSide(dsn, schema)
        # Alternate which side goes first, so a drift in the machine's load
        # during a run does not always favour the same side.
        sides: list[RelaySide | FloorSide] = [floor, relay] if index % 2 == 0 else [relay, floor]
        results: dict[str, dict[str, Any]] = {"relay_actors": {}, "floor": {}}

        round_trips = sizes.latency_rounds + sizes.warmup_rounds
        for side in sides:
            results[side.name]["latency"] = run_phase(
                dsn,
                side,
                f"{sizes.latency_rounds} sequential round trips",
                partial(side.latency, sizes.latency_rounds, sizes.warmup_rounds),
                round_trips,
            )
        # The floor again, committing each claim before it runs the job as
        # relay_actors does, so with as many WAL flushes on the path. Then that
        # floor on relay_actors' table and statements, to show their cost alone.
        floors: list[tuple[str, FloorSide, str]] = [
            (
                "latency_durable_claims",
                FloorSide(dsn, schema, durable_claims=True),
                "claims committed first",
            ),
            (
                "latency_relay_statements",
                StatementFloorSide(dsn, schema),
                "relay_actors' statements",
            ),
        ]
        for key, floor_side, label in floors:
            results["floor"][key] = run_phase(
                dsn,
                floor_side,
                f"{sizes.latency_rounds} sequential round trips, {label}",
                partial(floor_side.latency, sizes.latency_rounds, sizes.warmup_rounds),
                round_trips,
            )
        for key, jobs in (
            ("throughput_small", sizes.small_jobs),
            ("throughput_large", sizes.large_jobs),
        ):
            for side in sides:
                results[side.name][key] = run_phase(
                    dsn,
                    side,
                    f"{jobs} jobs from {sizes.caller_threads} caller threads",
                    partial(side.throughput, jobs, sizes.caller_threads),
                    jobs,
                )
        results["relay_actors"]["bulk"] = run_phase(
            dsn,
            relay,
            f"{sizes.small_jobs} jobs with async_many, {sizes.bulk_batch} per call",
            lambda: relay.bulk_throughput(sizes.small_jobs, sizes.caller_threads, sizes.bulk_batch),
            sizes.small_jobs,
        )
        results["relay_actors"]["await_many"] = run_phase(
            dsn,
            relay,
            f"one await_many over {sizes.await_many_jobs} relays",
            lambda: relay.await_many(sizes.await_many_jobs, sizes.bulk_batch),
            None,
        )
        if bouncer_dsn:
            pooled = RelaySide(dsn, schema, bouncer_dsn)
            results["relay_actors"]["pgbouncer_latency"] = run_phase(
                dsn,
                pooled,
                f"{sizes.latency_rounds} sequential round trips through PgBouncer",
                partial(pooled.latency, sizes.latency_rounds, sizes.warmup_rounds),
                None,
            )
            results["relay_actors"]["pgbouncer_throughput_small"] = run_phase(
                dsn,
                pooled,
                f"{sizes.small_jobs} jobs from {sizes.caller_threads} caller threads "
                "through PgBouncer",
                partial(pooled.throughput, sizes.small_jobs, sizes.caller_threads),
                None,
            )
        logger.info("relay_actors: memory with %d pending relays", sizes.pending_relays)
        results["relay_actors"]["memory"] = memory_workload(
            dsn, schema, sizes.pending_relays, sizes.completed_relays, sizes.memory_batch
        )
    return results
