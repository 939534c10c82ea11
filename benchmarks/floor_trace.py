"""Timeline of the floor's lone round trip, for `python -m benchmarks.critical_path --floor`.

The floor's worker runs in another process, as in the latency workload. Both
processes record their steps: the caller's insert, the worker's listening
thread, its claim and completion statements, then the caller's LISTEN
connection returning the result. Unless claims are durable, the worker's claim
also carries psycopg's BEGIN, one more round trip, and its commit is a step of
its own. Set side by side with relay_actors' timeline, it shows which steps
cost more than a hand-written loop's, and by how much.

Statements are traced by their rendered text. Tracing swaps the floor's
`statement` helper for one that renders each statement to bytes once and
remembers its name, so the floor's own code runs unchanged.
"""

from __future__ import annotations

import atexit
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from benchmarks import floor, floor_worker
from benchmarks.critical_path import Recorder
from benchmarks.processes import start_child, stop_when_parent_exits
from benchmarks.server import fresh_schema
from benchmarks.stats import Failures

Event = tuple[str, int]

# The first argument of a traced floor worker's command line.
WORKER_MODE = "--traced-floor-worker"
START = "caller: insert called"
END = "caller: result received"
NAMES = {floor.INSERT: "insert", floor.CLAIM: "claim", floor.COMPLETE: "complete"}


def install(recorder: Recorder, role: str) -> None:
    """Wrap the floor's statements and the psycopg calls that run them.

    `role` ("caller" or "worker") prefixes each statement's steps. The worker
    also marks its commits and each insert notification that its listening
    thread hands on.
    """
    mark, record = recorder.mark, recorder.record
    names: dict[bytes, str] = {}
    render = floor.statement

    def traced_statement(template: str, schema: str) -> Any:
        name = NAMES.get(template)
        if name is None:
            return render(template, schema)
        rendered = render(template, schema).as_bytes(None)
        names[rendered] = name
        return rendered

    floor.statement = traced_statement  # type: ignore[assignment]
    floor_worker.statement = traced_statement  # type: ignore[assignment]
    execute = psycopg.Connection.execute

    def traced_execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        name = names.get(query) if isinstance(query, bytes) else None
        if name is None:
            return execute(self, query, *args, **kwargs)
        sent = time.perf_counter_ns()
        cursor = execute(self, query, *args, **kwargs)
        returned = time.perf_counter_ns()
        # A worker claims once more after each job and finds nothing. That
        # claim overlaps the next round trip, so it gets a name of its own.
        if name == "claim" and cursor.rowcount == 0:
            name = "empty claim"
        record(f"{role}: {name} statement sent", sent)
        record(f"{role}: {name} statement returned", returned)
        return cursor

    psycopg.Connection.execute = traced_execute  # type: ignore[method-assign]
    if role != "worker":
        return

    commit = psycopg.Connection.commit

    def traced_commit(self: psycopg.Connection[Any]) -> None:
        mark("worker: commit statement sent")
        try:
            commit(self)
        finally:
            mark("worker: commit statement returned")

    psycopg.Connection.commit = traced_commit  # type: ignore[method-assign]
    wake_one = floor_worker.Dispatcher.wake_one

    def traced_wake_one(self: floor_worker.Dispatcher) -> None:
        mark("worker listener: insert notification")
        wake_one(self)

    floor_worker.Dispatcher.wake_one = traced_wake_one  # type: ignore[method-assign]


def run_worker(trace: Path, arguments: list[str]) -> int:
    """Run a traced floor worker, which writes its steps to `trace` when it exits."""
    recorder = Recorder()
    install(recorder, "worker")
    atexit.register(recorder.dump, trace)
    stop_when_parent_exits()
    return floor_worker.main(arguments)


@contextmanager
def traced_worker(dsn: str, schema: str, trace: Path, durable_claims: bool) -> Iterator[None]:
    child = start_child(
        "traced floor worker",
        [
            "benchmarks.critical_path",
            WORKER_MODE,
            str(trace),
            "--dsn",
            dsn,
            "--schema",
            schema,
            "--connections",
            str(floor.EXECUTORS),
            *(["--durable-claims"] if durable_claims else []),
        ],
    )
    try:
        yield
    finally:
        child.stop()


def measure(dsn: str, rounds: int, warmup: int, durable_claims: bool) -> list[Event]:
    """Time `warmup + rounds` floor round trips; return both processes' events of the last `rounds`.

    Raises:
        RuntimeError: a round trip returned no result or a wrong one.
    """
    recorder = Recorder()
    install(recorder, "caller")
    with fresh_schema(dsn) as schema, tempfile.TemporaryDirectory() as directory:
        trace = Path(directory) / "floor_worker.json"
        side = floor.FloorSide(dsn, schema, durable_claims=durable_claims)
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(floor.statement(floor.CREATE, schema))
        with traced_worker(dsn, schema, trace, durable_claims), floor.Caller(side, 0) as caller:
            for n in range(warmup + rounds):
                if n == warmup:
                    recorder.events.clear()
                recorder.mark(START)
                job_id = caller.insert(n)
                failures = Failures()
                deadline = time.monotonic() + floor.LATENCY_TIMEOUT_SECONDS
                caller.wait({job_id: n}, deadline, failures)
                recorder.mark(END)
                if failures.count:
                    raise RuntimeError(f"floor job n={n} failed: {failures.examples[0]}")
        worker_events = [(step, ns) for step, ns in json.loads(trace.read_text())]
    return recorder.events + worker_events


if __name__ == "__main__":
    sys.exit("run this as python -m benchmarks.critical_path --floor")
