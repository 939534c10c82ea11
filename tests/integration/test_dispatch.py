"""Which executor starts a claimed job: waiting jobs are left to busy executors only briefly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from relay_actors import Instance, Ok, Relay
from tests.conftest import wait_until
from tests.workers import SLOW_QUEUE, MarksThenWaits, WaitsForFile

RESULT_TIMEOUT = 10.0
WARM_UP_JOBS = 5


def test_job_beside_stalled_executor_starts(
    start_instance: Callable[..., Instance], tmp_path: Path
) -> None:
    """Of two jobs claimed together, both start at once on a two-executor node.

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
            message=lambda: f"started: {[mark.name for mark in marks if mark.exists()]}",
        )
    finally:
        gate.touch()
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok("released")] * 2
