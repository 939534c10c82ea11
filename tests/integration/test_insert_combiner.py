"""InsertCombiner: concurrent inserts share statements, and a batch gathers its usual callers.

Each test builds its own combiner on a started instance's pool. A table lock
held from another connection keeps the first statement waiting, so the
order in which callers queue is fixed and no test depends on timing, except
for lower bounds on a wait.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from relay_actors.inserting import InsertCombiner, Row
from relay_actors.instance import Instance
from relay_actors.job import Job
from tests.conftest import wait_until

THREAD_SECONDS = 10.0


def new_job() -> tuple[Job, dict[str, Any]]:
    """Return a job of a queue that no node runs, and its meta with a relay ref."""
    job: Job = Job(worker="tests.workers.Echo", args={}, queue="idle")
    return job, {"relay": {"ref": str(uuid.uuid4())}}


class Caller(threading.Thread):
    """Inserts one job through the combiner on its own thread."""

    def __init__(self, combiner: InsertCombiner) -> None:
        super().__init__(daemon=True)
        self._combiner = combiner
        self.rows: list[Row] = []
        self.seconds = 0.0

    def run(self) -> None:
        job, meta = new_job()
        started = time.monotonic()
        self.rows = self._combiner.insert([job], [meta])
        self.seconds = time.monotonic() - started


@contextmanager
def jobs_locked(database_dsn: str, prefix: str) -> Iterator[None]:
    """Block inserts into the jobs table until the block ends."""
    with psycopg.connect(database_dsn) as conn:
        conn.execute(
            sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(prefix, "jobs"))
        )
        yield
        conn.rollback()


def queued(combiner: InsertCombiner) -> int:
    """Return how many requests wait for the combiner's next batch."""
    return len(combiner._waiting)


def run_batch_of_two(combiner: InsertCombiner, database_dsn: str, prefix: str) -> None:
    """Insert one job alone, then two together, so that the next batch expects two callers."""
    first = Caller(combiner)
    waiting = [Caller(combiner), Caller(combiner)]
    with jobs_locked(database_dsn, prefix):
        first.start()
        wait_until(
            lambda: combiner._busy and not combiner._waiting,
            timeout=THREAD_SECONDS,
            message="the first caller did not start its statement",
        )
        for caller in waiting:
            caller.start()
        wait_until(
            lambda: queued(combiner) == 2,
            timeout=THREAD_SECONDS,
            message="two callers did not queue",
        )
    for caller in (first, *waiting):
        caller.join(THREAD_SECONDS)
    assert combiner.statements_run == 2
    assert combiner.jobs_inserted == 3


def combiner_after_batch_of_two(
    start_instance: Callable[..., Instance],
    database_dsn: str,
    prefix: str,
    gather_seconds: float = THREAD_SECONDS,
) -> InsertCombiner:
    """Return a combiner on a new instance that has inserted one job alone, then two together."""
    instance = start_instance()
    combiner = InsertCombiner(
        instance.pool, instance.statements, instance.insert_channel, gather_seconds=gather_seconds
    )
    run_batch_of_two(combiner, database_dsn, prefix)
    return combiner


def test_combiner_queued_callers_share_statement(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix)

    assert combiner._expected == 2


def test_combiner_batch_gathers_previous_callers(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix)
    leader, late = Caller(combiner), Caller(combiner)

    leader.start()
    wait_until(
        lambda: queued(combiner) == 1, timeout=THREAD_SECONDS, message="the leader did not queue"
    )
    late.start()
    leader.join(THREAD_SECONDS)
    late.join(THREAD_SECONDS)

    assert combiner.statements_run == 3
    assert combiner.jobs_inserted == 5
    assert leader.rows[0][0] != late.rows[0][0]


def test_combiner_lone_caller_waits_once(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    gather_seconds = 0.3
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix, gather_seconds)

    alone = Caller(combiner)
    alone.run()
    again = Caller(combiner)
    again.run()

    assert alone.seconds >= gather_seconds
    assert combiner._expected == 1
    # The window is long against an insert into a local server, which takes
    # about a millisecond, so this bound holds on a slow machine too.
    assert again.seconds < gather_seconds
    assert combiner.statements_run == 4


class InterruptedEvent(threading.Event):
    """An event whose wait is interrupted, as by Ctrl-C on the main thread."""

    def wait(self, timeout: float | None = None) -> bool:
        raise KeyboardInterrupt


def test_combiner_interrupted_gather_still_inserts(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix)
    combiner._gathered = InterruptedEvent()
    job, meta = new_job()

    with pytest.raises(KeyboardInterrupt):
        combiner.insert([job], [meta])

    # The interrupted leader still inserted its batch, and the combiner is free.
    assert combiner.statements_run == 3
    after = Caller(combiner)
    after.run()
    assert len(after.rows) == 1
    assert combiner.statements_run == 4


class LockInterruptedOnExit:
    """A lock whose `exit_number`th release raises KeyboardInterrupt right after it.

    Ctrl-C on the main thread can interrupt a caller between any two of its
    calls, for example just after the combiner's lock is released.
    """

    def __init__(self, exit_number: int) -> None:
        self._lock = threading.Lock()
        self._exits_left = exit_number

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self._lock.release()
        self._exits_left -= 1
        if self._exits_left == 0:
            raise KeyboardInterrupt


def assert_combiner_free(combiner: InsertCombiner) -> None:
    """Insert one job on another thread, which must not wait forever for a stuck combiner."""
    after = Caller(combiner)
    after.start()
    after.join(THREAD_SECONDS)
    assert not after.is_alive(), "a caller still waits: the interrupted caller left it busy"
    assert len(after.rows) == 1


def test_combiner_interrupt_after_claim_alone(
    start_instance: Callable[..., Instance],
) -> None:
    """An interrupt just after a lone caller marked the combiner busy leaves it free."""
    instance = start_instance()
    combiner = InsertCombiner(instance.pool, instance.statements, instance.insert_channel)
    combiner._lock = LockInterruptedOnExit(1)  # type: ignore[assignment]
    job, meta = new_job()

    with pytest.raises(KeyboardInterrupt):
        combiner.insert([job], [meta])

    assert combiner.statements_run == 0
    assert_combiner_free(combiner)


def test_combiner_interrupt_after_queueing_as_leader(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    """An interrupt just after a caller queued as the next leader withdraws its request."""
    # The next batch then waits up to 0.05 s for a second caller that never comes.
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix, 0.05)
    # The first release ends the check for a lone insert, the second the queueing.
    combiner._lock = LockInterruptedOnExit(2)  # type: ignore[assignment]
    job, meta = new_job()

    with pytest.raises(KeyboardInterrupt):
        combiner.insert([job], [meta])

    assert queued(combiner) == 0
    assert combiner.statements_run == 2
    assert_combiner_free(combiner)


def interrupt_first_call(combiner: InsertCombiner, name: str) -> None:
    """Make the combiner's method `name` raise KeyboardInterrupt on its first call.

    CPython 3.11 handles pending signals as a function starts (at its RESUME
    instruction), so this is where Ctrl-C often lands.
    """
    original = getattr(combiner, name)
    calls = 0

    def interrupted_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    setattr(combiner, name, interrupted_once)


class PoolInterruptedOnRelease:
    """A pool whose first connection raises KeyboardInterrupt once it is given back."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._interrupted = False

    @contextmanager
    def connection(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with self._pool.connection(*args, **kwargs) as conn:
            yield conn
        if not self._interrupted:
            self._interrupted = True
            raise KeyboardInterrupt


# Gathering window of the tests whose leader waits for a caller that starts
# 0.2 s later. Later inserts that come alone wait this long too.
GATHER_SECONDS = 1.0


def leader_with_waiter(combiner: InsertCombiner) -> Caller:
    """Insert on this thread as the leader of a batch that another caller joins; return it.

    The combiner expects two callers after a batch of two, so this thread
    gathers until the other caller, started 0.2 s later, queues.
    """
    waiter = Caller(combiner)
    joins = threading.Timer(0.2, waiter.start)
    joins.start()
    job, meta = new_job()
    try:
        with pytest.raises(KeyboardInterrupt):
            combiner.insert([job], [meta])
    finally:
        joins.join()
    waiter.join(THREAD_SECONDS)
    return waiter


def test_combiner_interrupt_entering_batch(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    """A leader interrupted as its batch starts withdraws its request and hands over."""
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix, 0.05)
    interrupt_first_call(combiner, "_run_batch")
    job, meta = new_job()

    with pytest.raises(KeyboardInterrupt):
        combiner.insert([job], [meta])

    assert queued(combiner) == 0
    assert combiner.statements_run == 2
    assert not combiner._busy
    assert_combiner_free(combiner)


def test_combiner_interrupt_handing_over_alone(
    start_instance: Callable[..., Instance],
) -> None:
    """A lone caller interrupted as it hands over still leaves the combiner free."""
    instance = start_instance()
    combiner = InsertCombiner(instance.pool, instance.statements, instance.insert_channel)
    interrupt_first_call(combiner, "_hand_over")
    job, meta = new_job()

    with pytest.raises(KeyboardInterrupt):
        combiner.insert([job], [meta])

    assert combiner.statements_run == 1
    assert not combiner._busy
    assert_combiner_free(combiner)


def test_combiner_interrupt_handing_over_batch(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    """A leader interrupted as it hands over still wakes the other caller of its batch."""
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix, GATHER_SECONDS)
    interrupt_first_call(combiner, "_hand_over")

    waiter = leader_with_waiter(combiner)

    assert not waiter.is_alive(), "the other caller still waits, although its job was inserted"
    assert len(waiter.rows) == 1
    assert combiner.statements_run == 3
    assert_combiner_free(combiner)


def test_combiner_interrupt_after_statement(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    """An interrupt after the batch's statement reaches only the leader; the others get rows."""
    combiner = combiner_after_batch_of_two(start_instance, database_dsn, prefix, GATHER_SECONDS)
    combiner._pool = PoolInterruptedOnRelease(combiner._pool)  # type: ignore[assignment]

    waiter = leader_with_waiter(combiner)

    assert not waiter.is_alive()
    assert len(waiter.rows) == 1
    assert combiner.statements_run == 3
    assert combiner.jobs_inserted == 5
    assert_combiner_free(combiner)
