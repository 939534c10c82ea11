"""Which executor starts a claimed job: waiting jobs are left to busy executors only briefly."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relay_actors import Instance, Ok, Relay
from relay_actors.actors.messages import ExecutorIdle
from tests.conftest import wait_until
from tests.workers import QUICK_QUEUE, SLOW_QUEUE, Echo, MarksThenWaits, WaitsForFile

RESULT_TIMEOUT = 10.0
WARM_UP_JOBS = 5
# Inserted in one statement, so that claims take several jobs ahead of need.
BATCH_JOBS = 40


def test_job_beside_stalled_executor_starts(
    start_instance: Callable[..., Instance], tmp_path: Path
) -> None:
    """Of two jobs claimed together on a two-executor node, both start while one blocks.

    After short attempts, the producer leaves a waiting job to a busy
    executor, which starts it when its own attempt ends. Here that attempt
    blocks, so the waiting job must start on the other executor once the
    busy one counts as stalled, not when the blocking job ends.
    """
    caller = start_instance(queues={})
    start_instance(queues={SLOW_QUEUE: 2})
    opened = tmp_path / "open"
    opened.touch()
    gate = tmp_path / "gate"
    for _ in range(WARM_UP_JOBS):
        quick = Relay.async_(caller.name, WaitsForFile.new({"path": str(opened), "seconds": 5}))
        assert Relay.await_(quick, timeout=RESULT_TIMEOUT) == Ok("released")

    marks = [tmp_path / "first-started", tmp_path / "second-started"]
    jobs = [
        MarksThenWaits.new({"mark": str(mark), "path": str(gate), "seconds": 30}) for mark in marks
    ]
    relays = Relay.async_many(caller.name, jobs)
    try:
        wait_until(
            lambda: all(mark.exists() for mark in marks),
            timeout=RESULT_TIMEOUT,
            message=lambda: f"expected both started: {[m.name for m in marks if m.exists()]}",
        )
    finally:
        gate.touch()
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok("released")] * 2


def test_busy_executor_starts_waiting_jobs(
    start_instance: Callable[..., Instance], producer_messages: list[Any]
) -> None:
    """Jobs claimed ahead of short attempts run on executors that report busy.

    An executor that finishes an attempt while jobs wait starts the next
    itself and reports `busy`, without waiting for the producer to hand it
    one.
    """
    instance = start_instance(queues={QUICK_QUEUE: 2})
    for n in range(WARM_UP_JOBS):
        relay = Relay.async_(instance.name, Echo.new({"value": n}))
        assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(n)

    relays = Relay.async_many(instance.name, [Echo.new({"value": n}) for n in range(BATCH_JOBS)])

    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(n) for n in range(BATCH_JOBS)]
    reports = Counter(
        message.busy for message in producer_messages if isinstance(message, ExecutorIdle)
    )
    assert reports[True] > 0
    assert reports[True] + reports[False] == WARM_UP_JOBS + BATCH_JOBS
