"""How much slower this machine's next step is after a short idle wait.

A round trip through a job queue is a chain of steps that each wait for the
one before: a statement, a commit's WAL flush, a wake-up of another thread or
process. On some virtual machines a step costs several times more after the
machine idled for a millisecond. On one 2-vCPU virtual machine, `SELECT 1`
took 27 µs back to back and 239 µs after 1 ms idle, and a durable insert 72
and 881 µs. A likely cause, not checked, is that the hypervisor halts an
idle virtual CPU and then has to wake it. relay_actors' round trip has more
hand-offs than the floor's, so such a machine is likely to slow it more.
These figures let a reader compare two machines on that.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.server import fresh_schema

IDLE_SECONDS = 0.001


def idle_costs(dsn: str, samples: int) -> dict[str, float]:
    """Measure SELECT 1, a durable one-row insert and a thread wake-up, busy and after idling.

    Returns medians in microseconds, keyed "select", "commit" and "wake",
    each followed by "_busy" or "_idle". The insert goes to a table in a
    schema of its own, which is dropped afterwards, and commits with
    synchronous_commit = on, so that it waits for its WAL flush.
    """
    costs: dict[str, float] = {}
    with fresh_schema(dsn) as schema, psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = on")
        table = sql.Identifier(schema, "idle_probe")
        create = sql.SQL("CREATE TABLE {} (id bigint GENERATED ALWAYS AS IDENTITY)")
        conn.execute(create.format(table))
        insert = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table)
        steps: dict[str, Callable[[], Any]] = {
            "select": lambda: conn.execute("SELECT 1"),
            "commit": lambda: conn.execute(insert),
        }
        for name, step in steps.items():
            for mode, idle in (("busy", 0.0), ("idle", IDLE_SECONDS)):
                costs[f"{name}_{mode}"] = _median_micros(step, samples, idle)
    for mode, idle in (("busy", 0.0), ("idle", IDLE_SECONDS)):
        costs[f"wake_{mode}"] = _wake_micros(samples, idle)
    return costs


def _median_micros(step: Callable[[], Any], samples: int, idle: float) -> float:
    timings = []
    for _ in range(samples):
        if idle:
            time.sleep(idle)
        started = time.perf_counter_ns()
        step()
        timings.append(time.perf_counter_ns() - started)
    return statistics.median(timings) / 1000


def _wake_micros(samples: int, idle: float) -> float:
    """Return the median time from a queue put to the waiting thread running, in microseconds."""
    requests: queue.Queue[int | None] = queue.Queue()
    woken: queue.Queue[int] = queue.Queue()

    def wait_for_requests() -> None:
        while requests.get() is not None:
            woken.put(time.perf_counter_ns())

    waiter = threading.Thread(target=wait_for_requests, name="idle-probe-waiter", daemon=True)
    waiter.start()
    timings = []
    try:
        for _ in range(samples):
            if idle:
                time.sleep(idle)
            sent = time.perf_counter_ns()
            requests.put(sent)
            timings.append(woken.get() - sent)
    finally:
        requests.put(None)
        waiter.join()
    return statistics.median(timings) / 1000


def describe(costs: dict[str, float] | None) -> str:
    """Return the costs as one phrase for the table's header, or "not measured"."""
    if not costs:
        return "not measured"
    idle_ms = IDLE_SECONDS * 1000
    return (
        f"busy and after {idle_ms:g} ms idle, SELECT 1 {costs['select_busy']:.0f} and "
        f"{costs['select_idle']:.0f} µs, a durable insert {costs['commit_busy']:.0f} and "
        f"{costs['commit_idle']:.0f} µs, a thread wake-up {costs['wake_busy']:.0f} and "
        f"{costs['wake_idle']:.0f} µs"
    )
