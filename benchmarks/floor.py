"""The floor: the same workloads on a minimal queue written by hand with psycopg 3.

Two commits per job: the caller's INSERT, which NOTIFYs the insert channel in
the same transaction, and the worker's claim and completion, which NOTIFYs the
caller's channel in the same transaction. The worker side runs in its own OS
process (benchmarks.floor_worker); each caller thread LISTENs on a channel of
its own. Nothing here is shared with relay_actors except the server.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.processes import Child, join_threads, start_child
from benchmarks.stats import Failures, latency_summary

EXECUTORS = 10
APPLICATION_NAME = "relay_actors_bench floor"
AWAIT_TIMEOUT_SECONDS = 120.0
LATENCY_TIMEOUT_SECONDS = 10.0

CREATE = """
CREATE TABLE IF NOT EXISTS {jobs} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state text NOT NULL DEFAULT 'available',
    arg bigint NOT NULL,
    reply text NOT NULL,
    result bigint
);
CREATE INDEX IF NOT EXISTS floor_jobs_available ON {jobs} (id) WHERE state = 'available';
"""

# One statement, so one transaction and one commit: the row and its wake-up.
INSERT = """
WITH job AS (INSERT INTO {jobs} (arg, reply) VALUES (%s, %s) RETURNING id)
SELECT id, pg_notify(%s, '') FROM job
"""

CLAIM = """
UPDATE {jobs} SET state = 'running'
WHERE id = (
    SELECT id FROM {jobs} WHERE state = 'available'
    ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, arg, reply
"""

COMPLETE = """
WITH done AS (
    UPDATE {jobs} SET state = 'done', result = %(result)s WHERE id = %(id)s RETURNING id)
SELECT pg_notify(%(reply)s, %(payload)s) FROM done
"""


def statement(template: str, schema: str) -> sql.Composed:
    """Return `template` with {jobs} replaced by the floor's table in `schema`."""
    return sql.SQL(template).format(jobs=sql.Identifier(schema, "floor_jobs"))


def insert_channel(schema: str) -> str:
    return f"{schema}_floor_insert"


class FloorSide:
    """The floor's worker process and table in one schema, for the duration of a phase."""

    name = "floor"

    def __init__(self, dsn: str, schema: str, durable_claims: bool = False) -> None:
        self.dsn = dsn
        self.schema = schema
        self.durable_claims = durable_claims
        self.application_name = f"{APPLICATION_NAME} {schema}"
        self.child: Child | None = None

    def start(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            self.create_table(conn)
        self.child = start_child(
            "floor worker",
            [
                "benchmarks.floor_worker",
                "--dsn",
                self.dsn,
                "--schema",
                self.schema,
                "--connections",
                str(EXECUTORS),
                "--application-name",
                self.application_name,
                *(["--durable-claims"] if self.durable_claims else []),
                *self.worker_options(),
            ],
        )

    def create_table(self, conn: psycopg.Connection[Any]) -> None:
        conn.execute(statement(CREATE, self.schema))

    def worker_options(self) -> list[str]:
        """Return the floor worker's options beyond those that every floor passes."""
        return []

    def caller(self, index: int) -> Caller:
        return Caller(self, index)

    def stop(self) -> None:
        if self.child is not None:
            self.child.stop()
            self.child = None

    def _check_worker(self) -> None:
        if self.child is not None:
            self.child.check_alive()

    def backend_patterns(self) -> list[str]:
        return [self.application_name]

    def reset(self) -> None:
        """Delete every job, so the next phase starts with an empty table."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(statement("TRUNCATE {jobs}", self.schema))

    def latency(self, rounds: int, warmup: int) -> dict[str, Any]:
        """Time `rounds` sequential insert-to-result round trips from one thread."""
        failures = Failures()
        times: list[float] = []
        with self.caller(0) as caller:
            for n in range(warmup + rounds):
                started = time.perf_counter()
                job_id = caller.insert(n)
                caller.wait({job_id: n}, time.monotonic() + LATENCY_TIMEOUT_SECONDS, failures)
                if n >= warmup:
                    times.append(time.perf_counter() - started)
                self._check_worker()
        return {**latency_summary(times), "rounds": rounds, "failures": failures}

    def throughput(self, jobs: int, threads: int) -> dict[str, Any]:
        """Time `jobs` jobs inserted one at a time by `threads` callers, all results awaited."""
        failures = Failures()
        callers = [self.caller(index) for index in range(threads)]
        barrier = threading.Barrier(threads + 1)

        def call(caller: Caller, numbers: range) -> None:
            try:
                barrier.wait()
                expected = {caller.insert(n): n for n in numbers}
                caller.wait(expected, time.monotonic() + AWAIT_TIMEOUT_SECONDS, failures)
            except Exception as error:  # noqa: BLE001 - counted as a failure of the run
                failures.add(f"floor caller {caller.index} failed: {error!r}")

        # Daemon threads, so an interrupted run exits without waiting for their awaits.
        runners = [
            threading.Thread(target=call, args=(caller, range(index, jobs, threads)), daemon=True)
            for index, caller in enumerate(callers)
        ]
        for thread in runners:
            thread.start()
        barrier.wait()
        started = time.perf_counter()
        join_threads(runners, self.child)
        seconds = time.perf_counter() - started
        for caller in callers:
            caller.close()
        return {
            "jobs": jobs,
            "seconds": seconds,
            "jobs_per_s": jobs / seconds,
            "failures": failures,
        }


class Caller:
    """One caller thread's two connections: one inserts, one LISTENs for its results."""

    def __init__(self, side: FloorSide, index: int) -> None:
        self.index = index
        self.channel = f"{side.schema}_floor_reply_{index}"
        self._insert = statement(INSERT, side.schema)
        self._wake_channel = insert_channel(side.schema)
        self._conn = psycopg.connect(
            side.dsn, autocommit=True, application_name=side.application_name
        )
        self._listen = psycopg.connect(
            side.dsn, autocommit=True, application_name=side.application_name
        )
        self._listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))

    def __enter__(self) -> Caller:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()
        self._listen.close()

    def insert(self, n: int) -> int:
        row = self._conn.execute(self._insert, (n, self.channel, self._wake_channel)).fetchone()
        assert row is not None
        return int(row[0])

    def wait(self, expected: dict[int, int], deadline: float, failures: Failures) -> None:
        """Read results until every job in `expected` (id to result) has one, or the deadline."""
        while expected:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for notify in self._listen.notifies(timeout=remaining):
                self.check(notify.payload, expected, failures)
                if not expected:
                    break
        for missing in expected:
            failures.add(f"floor job {missing}: no result by the deadline")

    def check(self, payload: str, expected: dict[int, int], failures: Failures) -> None:
        """Remove the jobs whose results `payload` carries from `expected`, counting wrong ones."""
        job_id, _, result = payload.partition(":")
        want = expected.pop(int(job_id), None)
        if want is None or result != str(want):
            failures.add(f"floor job {job_id}: unexpected result {payload!r}")
