"""The relay_actors side: a worker node in its own OS process, callers in this one."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql

import relay_actors
from benchmarks.processes import ROOT, Child, ChildFailed, join_threads, start_child
from benchmarks.stats import Failures, latency_summary
from benchmarks.workers import QUEUE, Echo
from relay_actors import Ok, Relay

INSTANCE = "bench"
EXECUTORS = 10
AWAIT_TIMEOUT_SECONDS = 120.0
LATENCY_TIMEOUT_SECONDS = 10.0
WORKER_NODE_NAME = "bench-node"
# Extra `relay-actors worker` options for every node, set from the command line.
NODE_OPTIONS: list[str] = []
CALLER_NODE_NAME = "bench-caller"


def worker_node_arguments(dsn: str, schema: str, bouncer_dsn: str | None = None) -> list[str]:
    """Return the `python -m` arguments of a worker node running the bench queue.

    With `bouncer_dsn`, the node works through that PgBouncer and keeps a
    direct connection to `dsn` for its listener.
    """
    through = ["--pgbouncer", "--listen-dsn", dsn] if bouncer_dsn else []
    return [
        "benchmarks.node",
        "--dsn",
        bouncer_dsn or dsn,
        *through,
        "--prefix",
        schema,
        "--queue",
        f"{QUEUE}={EXECUTORS}",
        "--module",
        "benchmarks.workers",
        "--node",
        WORKER_NODE_NAME,
        *NODE_OPTIONS,
    ]


def check_results(
    results: Sequence[Ok[Any] | relay_actors.Error], numbers: Sequence[int], failures: Failures
) -> None:
    """Count every result that is not Ok(n) for its job's argument n."""
    for n, result in zip(numbers, results, strict=True):
        if result != Ok(n):
            failures.add(f"relay_actors job n={n}: expected Ok({n}), got {result!r:.300}")


class RelaySide:
    """A worker node process and a caller instance on one schema, for the duration of a phase."""

    name = "relay_actors"

    def __init__(self, dsn: str, schema: str, bouncer_dsn: str | None = None) -> None:
        self.dsn = dsn
        self.schema = schema
        self.bouncer_dsn = bouncer_dsn
        self.child: Child | None = None
        self.instance: relay_actors.Instance | None = None
        self._node_ids: list[str] = []

    def start(self) -> None:
        self._node_ids = []
        self.child = start_child(
            "relay_actors worker node",
            worker_node_arguments(self.dsn, self.schema, self.bouncer_dsn),
        )
        node_id = self.child.ready_field("node")
        if node_id:
            self._node_ids.append(node_id)
        through: dict[str, Any] = (
            {"dsn": self.bouncer_dsn, "pgbouncer": True, "listen_dsn": self.dsn}
            if self.bouncer_dsn
            else {"dsn": self.dsn}
        )
        self.instance = relay_actors.start(
            name=INSTANCE,
            queues={},
            plugins=[Relay],
            prefix=self.schema,
            node=CALLER_NODE_NAME,
            **through,
        )
        self._node_ids.append(self.instance.node_id)

    def stop(self) -> None:
        if self.instance is not None:
            self.instance.stop()
            self.instance = None
        if self.child is not None:
            self.child.stop()
            self.child = None

    def _check_node(self) -> None:
        if self.child is not None:
            self.child.check_alive()

    def backend_patterns(self) -> list[str]:
        """Return LIKE patterns of this side's application_names (`relay_actors ROLE NODE_ID`)."""
        return [f"relay_actors % {node_id}" for node_id in self._node_ids]

    def reset(self) -> None:
        """Delete every job, so the next phase starts with an empty table."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(self.schema, "jobs")))

    def latency(self, rounds: int, warmup: int) -> dict[str, Any]:
        """Time `rounds` sequential `async_` then `await_` round trips from one thread."""
        failures = Failures()
        times: list[float] = []
        for n in range(warmup + rounds):
            started = time.perf_counter()
            relay = Relay.async_(INSTANCE, Echo.new({"n": n}))
            result = Relay.await_(relay, timeout=LATENCY_TIMEOUT_SECONDS)
            if n >= warmup:
                times.append(time.perf_counter() - started)
            check_results([result], [n], failures)
            self._check_node()
        return {**latency_summary(times), "rounds": rounds, "failures": failures}

    def throughput(self, jobs: int, threads: int) -> dict[str, Any]:
        """Time `jobs` jobs inserted with one `async_` each by `threads` callers, all awaited."""

        def insert(numbers: Sequence[int]) -> list[Relay[Any]]:
            return [Relay.async_(INSTANCE, Echo.new({"n": n})) for n in numbers]

        return _run_callers(jobs, threads, insert, self.child)

    def bulk_throughput(self, jobs: int, threads: int, batch: int) -> dict[str, Any]:
        """As `throughput`, but each caller inserts its jobs with `async_many`, `batch` per call."""

        def insert(numbers: Sequence[int]) -> list[Relay[Any]]:
            return _insert_in_batches(numbers, batch)

        return {**_run_callers(jobs, threads, insert, self.child), "batch": batch}

    def await_many(self, jobs: int, batch: int) -> dict[str, Any]:
        """Insert `jobs` jobs from one thread, then time one `await_many` over all of them."""
        failures = Failures()
        numbers = range(jobs)
        started = time.perf_counter()
        relays = _insert_in_batches(numbers, batch)
        inserted = time.perf_counter()
        results = Relay.await_many(relays, timeout=AWAIT_TIMEOUT_SECONDS)
        finished = time.perf_counter()
        check_results(results, numbers, failures)
        return {
            "jobs": jobs,
            "insert_seconds": inserted - started,
            "await_many_seconds": finished - inserted,
            "total_seconds": finished - started,
            "failures": failures,
        }


def _insert_in_batches(numbers: Sequence[int], batch: int) -> list[Relay[Any]]:
    relays: list[Relay[Any]] = []
    for first in range(0, len(numbers), batch):
        jobs = [Echo.new({"n": n}) for n in numbers[first : first + batch]]
        relays.extend(Relay.async_many(INSTANCE, jobs))
    return relays


def _run_callers(
    jobs: int,
    threads: int,
    insert: Callable[[Sequence[int]], list[Relay[Any]]],
    node: Child | None,
) -> dict[str, Any]:
    """Run `threads` callers that each insert a share of the jobs, then await all of theirs."""
    failures = Failures()
    barrier = threading.Barrier(threads + 1)

    def call(numbers: range) -> None:
        try:
            barrier.wait()
            relays = insert(numbers)
            results = Relay.await_many(relays, timeout=AWAIT_TIMEOUT_SECONDS)
            check_results(results, numbers, failures)
        except Exception as error:  # noqa: BLE001 - counted as a failure of the run
            failures.add(f"relay_actors caller failed: {error!r}")

    # Daemon threads, so an interrupted run exits without waiting for their awaits.
    callers = [
        threading.Thread(
            target=call, args=(range(index, jobs, threads),), name=f"caller-{index}", daemon=True
        )
        for index in range(threads)
    ]
    for caller in callers:
        caller.start()
    barrier.wait()
    started = time.perf_counter()
    join_threads(callers, node)
    seconds = time.perf_counter() - started
    return {"jobs": jobs, "seconds": seconds, "jobs_per_s": jobs / seconds, "failures": failures}


MEMORY_TIMEOUT_SECONDS = 600.0


def memory_workload(
    dsn: str, schema: str, pending: int, completed: int, batch: int
) -> dict[str, Any]:
    """Run the memory probe (benchmarks.memory) in a fresh process beside a worker node."""
    node = start_child("relay_actors worker node", worker_node_arguments(dsn, schema))
    try:
        command = [
            sys.executable,
            "-m",
            "benchmarks.memory",
            "--dsn",
            dsn,
            "--prefix",
            schema,
            "--pending",
            str(pending),
            "--completed",
            str(completed),
            "--batch",
            str(batch),
        ]
        probe = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True, cwd=ROOT
        )
        try:
            output, _ = probe.communicate(timeout=MEMORY_TIMEOUT_SECONDS)
        finally:
            if probe.poll() is None:
                probe.kill()
                probe.wait()
    finally:
        node.stop()
    if probe.returncode != 0:
        raise ChildFailed(f"the memory probe exited with status {probe.returncode}")
    result: dict[str, Any] = json.loads(output.strip().splitlines()[-1])
    return result
