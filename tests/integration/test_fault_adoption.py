"""Outcomes and prefetched jobs that a write fails to settle, and what then runs the jobs.

Another session locks job rows, and the node's statements time out after
LOCK_WAIT_MS, so writes fail the way they do when a row stays locked too long.
A job whose outcome the acker gives up on, or that a stopping producer fails to
return to the queue, stays `executing` on this node. The next producer's audit
must find it and run it. An outcome that cannot be written at all is replaced
by a failed attempt, whose write the acker must retry until it succeeds.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql

from relay_actors import Discard, Error, Instance, Job, JobError, Ok, Relay, Worker
from relay_actors.actors.acker import RECORD_FAILED_TYPE
from relay_actors.actors.producer import ProducerActor
from relay_actors.store import connect
from tests.conftest import job_state, wait_until
from tests.integration.test_lost_claim_reply import FAST_AUDIT
from tests.integration.test_missed_signals import read_job
from tests.integration.test_results import retry_due_in
from tests.restarts import only_actor, wait_for_restart
from tests.workers import QUICK_QUEUE, SLOW_QUEUE

RESULT_TIMEOUT = 10.0
# Statement timeout in milliseconds of the connections that instances open,
# so that a write that waits for a locked row fails after half a second.
LOCK_WAIT_MS = 500
# A jsonb value cannot contain the character U+0000, so the server rejects
# every write of an outcome whose row meta would get this reason.
UNSTORABLE_REASON = "contains \x00, which jsonb rejects"

# Runs of the workers below, by job id.
RUNS: Counter[int] = Counter()
# Events that jobs wait for, by the name in their args.
GATES: dict[str, threading.Event] = {}


class WaitsOnFirstRun(Worker[str], queue=QUICK_QUEUE, max_attempts=1):
    """Count the run, and return "done".

    The job's first run waits until the test sets the GATES event named by
    `args["gate"]`, if the args name one.
    """

    def perform(self, job: Job) -> str:
        assert job.id is not None
        RUNS[job.id] += 1
        if RUNS[job.id] == 1 and "gate" in job.args:
            GATES[job.args["gate"]].wait(RESULT_TIMEOUT)
        return "done"


class UnstorableFirstAttempt(Worker[str], queue=QUICK_QUEUE, max_attempts=3):
    """Count the run, wait for the gate `args["gate"]`, and end attempt 1 with a Discard.

    The Discard's reason is UNSTORABLE_REASON, so no write can store attempt
    1's outcome. Later attempts return "done".
    """

    def perform(self, job: Job) -> str | Discard:
        assert job.id is not None
        RUNS[job.id] += 1
        GATES[job.args["gate"]].wait(RESULT_TIMEOUT)
        if job.attempt == 1:
            return Discard(UNSTORABLE_REASON)
        return "done"


class AlwaysUnstorable(Worker[str], queue=QUICK_QUEUE, max_attempts=2):
    """Count the run, and end every attempt with a Discard whose reason no write can store."""

    def perform(self, job: Job) -> Discard:
        assert job.id is not None
        RUNS[job.id] += 1
        return Discard(UNSTORABLE_REASON)


@pytest.fixture(autouse=True)
def fresh_runs() -> None:
    """Forget the runs of earlier tests, whose schemas numbered their jobs from 1 too."""
    RUNS.clear()


@pytest.fixture
def new_gate(start_instance: Callable[..., Instance]) -> Iterator[Callable[[], str]]:
    """Factory of closed gates, which returns the name to put in a job's args.

    Every gate opens at teardown, before the instances stop, so that no job
    of a failed test waits out its timeout.
    """
    names: list[str] = []

    def make() -> str:
        name = secrets.token_hex(4)
        GATES[name] = threading.Event()
        names.append(name)
        return name

    yield make
    for name in names:
        GATES.pop(name).set()


@pytest.fixture
def short_statement_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the connections that instances open from now on a LOCK_WAIT_MS statement timeout."""
    monkeypatch.setattr(connect, "STATEMENT_TIMEOUT_MS", LOCK_WAIT_MS)


@contextmanager
def rows_locked(database_dsn: str, prefix: str, job_ids: list[int]) -> Iterator[None]:
    """Hold a FOR SHARE lock on the rows of `job_ids`, so that every update of them waits."""
    locker = psycopg.connect(database_dsn)
    try:
        query = sql.SQL("SELECT id FROM {} WHERE id = ANY(%s) FOR SHARE").format(
            sql.Identifier(prefix, "jobs")
        )
        locked = locker.execute(query, (job_ids,)).fetchall()
        assert sorted(row[0] for row in locked) == sorted(job_ids)
        yield
    finally:
        locker.rollback()
        locker.close()


def logged(caplog: pytest.LogCaptureFixture, logger: str, action: str) -> int:
    """Return how many records of `logger` with the `action` extra were captured so far."""
    return sum(
        1
        for record in caplog.records
        if record.name == logger and getattr(record, "action", None) == action
    )


def start_gated_job(
    caller: Instance, worker_class: type[Worker[Any]], gate: str
) -> tuple[Relay[Any], int]:
    """Insert a job of `worker_class` that waits for `gate`; return it and its id once it runs."""
    relay = Relay.async_(caller.name, worker_class.new({"gate": gate}))
    job_id = relay.job.id
    assert job_id is not None
    wait_until(lambda: RUNS[job_id] == 1, timeout=RESULT_TIMEOUT, message="the job never ran")
    return relay, job_id


def wait_for_failed_writes(caplog: pytest.LogCaptureFixture, count: int, message: str) -> None:
    """Wait until the acker has logged `count` failed writes (action `record_failed`)."""
    wait_until(
        lambda: logged(caplog, "relay_actors.acker", "record_failed") >= count,
        timeout=RESULT_TIMEOUT,
        message=message,
    )


def retry_now(conn: psycopg.Connection[Any], schema: str, job_id: int) -> None:
    """Wait until the job is retryable after the default backoff, then make its retry due.

    The first failed attempt waits at least 15 s plus 2 s (see
    `relay_actors.backoff`). The test moves the retry to now, so the stager
    makes the job available on its next run.
    """
    wait_until(
        lambda: job_state(conn, schema, job_id) == "retryable",
        timeout=RESULT_TIMEOUT,
        message=lambda: f"job {job_id} is {job_state(conn, schema, job_id)}, not retryable",
    )
    wait = retry_due_in(conn, schema, job_id)
    assert wait > 15.0, f"the retry of job {job_id} is due in {wait:.1f} s, before its backoff"
    due_now = sql.SQL("UPDATE {} SET scheduled_at = now() WHERE id = %s")
    conn.execute(due_now.format(sql.Identifier(schema, "jobs")), (job_id,))


def wait_until_all_recorded(instance: Instance) -> None:
    """Wait until no outcome of `instance`'s node is listed as unwritten."""
    wait_until(
        lambda: len(instance.unrecorded) == 0,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"{len(instance.unrecorded)} outcomes still listed as unwritten",
    )


def test_acker_stop_outcome_adopted(
    short_statement_timeout: None,
    start_instance: Callable[..., Instance],
    new_gate: Callable[[], str],
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outcome that the acker cannot write before it stops leaves its job to the audit.

    Another session locks the job's row before its attempt ends, so the
    producer's write of the outcome times out, and so do the acker's. The
    acker is then stopped from outside, as a crash would stop it, fails its
    last write and gives the outcome up. Once the lock is gone, the
    producer's audit adopts the job and runs it a second time.
    """
    caller = start_instance(queues={})
    worker = start_instance(queues={QUICK_QUEUE: 2}, **FAST_AUDIT)
    gate = new_gate()
    relay, job_id = start_gated_job(caller, WaitsOnFirstRun, gate)

    with rows_locked(database_dsn, prefix, [job_id]):
        GATES[gate].set()
        wait_for_failed_writes(caplog, 1, "the acker never failed to write the outcome")
        acker = worker.acker.ref
        assert acker is not None
        # Stopping the actor from outside the instance looks to the supervisor like a crash.
        acker.stop()
        assert logged(caplog, "relay_actors.acker", "record_lost") == 1
        assert len(worker.unrecorded) == 0
        assert job_state(db, prefix, job_id) == "executing"

    wait_for_restart(worker, "acker")
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("done")
    row = read_job(db, prefix, job_id)
    assert row["state"] == "completed"
    assert row["attempt"] == 1
    assert RUNS[job_id] == 2
    assert worker.statistics()[f"producer {QUICK_QUEUE}"]["adopted"] == 1
    wait_until_all_recorded(worker)


def test_acker_fallback_retried_after_lock(
    short_statement_timeout: None,
    start_instance: Callable[..., Instance],
    new_gate: Callable[[], str],
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failed attempt that replaces an unstorable outcome is written on a later tick.

    The server rejects every write of the job's first outcome, so the acker
    replaces it with a failed attempt. Another session locks the job's row,
    so the write of that failed attempt times out, and the acker keeps its
    batch for the next tick. Once the lock is gone, a tick writes the failed
    attempt, with its retry after the default backoff. Once the test makes
    that retry due, the job's second attempt completes.
    """
    caller = start_instance(queues={})
    worker = start_instance(queues={QUICK_QUEUE: 2}, poll_interval=0.2)
    gate = new_gate()
    relay, job_id = start_gated_job(caller, UnstorableFirstAttempt, gate)

    with rows_locked(database_dsn, prefix, [job_id]):
        GATES[gate].set()
        # Each failed tick logs one record_failed, so two show that a retry failed too.
        wait_for_failed_writes(
            caplog, 2, "the acker did not fail to write the failed attempt on two ticks"
        )
        assert logged(caplog, "relay_actors.acker", "record_lost") == 0
        locked_row = read_job(db, prefix, job_id)
        assert locked_row["state"] == "executing"
        assert locked_row["errors"] == []
        assert len(worker.unrecorded) == 1

    retry_now(db, prefix, job_id)
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT, with_retries=True)
    assert result == Ok("done")
    row = read_job(db, prefix, job_id)
    assert row["state"] == "completed"
    assert row["attempt"] == 2
    assert RUNS[job_id] == 2
    assert "discard_reason" not in row["meta"]
    assert len(row["errors"]) == 1
    error = row["errors"][0]
    assert error["type"] == RECORD_FAILED_TYPE
    assert error["attempt"] == 1
    assert "could not be recorded" in error["message"]
    assert logged(caplog, "relay_actors.acker", "record_lost") == 0
    wait_until_all_recorded(worker)
    assert worker.statistics()["acker"]["recorded"] == 1


def test_acker_fallback_stops_at_max_attempts(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job whose every outcome is unstorable runs max_attempts times, then is discarded.

    The failed attempt that replaces each outcome counts like any failed
    attempt: the job waits its backoff before the next attempt, and the last
    attempt discards the job, so its caller gets a final error.
    """
    caller = start_instance(queues={})
    start_instance(queues={QUICK_QUEUE: 2}, poll_interval=0.2)
    relay = Relay.async_(caller.name, AlwaysUnstorable.new({}))
    job_id = relay.job.id
    assert job_id is not None

    retry_now(db, prefix, job_id)
    assert RUNS[job_id] == 1
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT, with_retries=True)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == RECORD_FAILED_TYPE
    assert result.reason.attempt == 2
    row = read_job(db, prefix, job_id)
    assert row["state"] == "discarded"
    assert row["attempt"] == 2
    assert [error["type"] for error in row["errors"]] == [RECORD_FAILED_TYPE] * 2
    assert RUNS[job_id] == 2
    assert logged(caplog, "relay_actors.acker", "record_lost") == 0


def test_failed_unclaim_jobs_adopted(
    short_statement_timeout: None,
    start_instance: Callable[..., Instance],
    new_gate: Callable[[], str],
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prefetched jobs that a stopping producer fails to return are adopted by the next one.

    Both executors of the node wait on a gate while two more jobs wait,
    claimed ahead of them. Another session locks those two rows, so
    returning them times out when the producer is stopped from outside, as
    a crash would stop it. The jobs stay executing on this node, and the
    restarted producer's audit adopts them and runs each once.
    """
    caller = start_instance(queues={})
    worker = start_instance(queues={SLOW_QUEUE: 2}, **FAST_AUDIT)

    def producer_figures() -> dict[str, int]:
        figures: dict[str, int] = worker.statistics()[f"producer {SLOW_QUEUE}"]
        return figures

    # Quick attempts make the producer claim ahead of its executors.
    for _ in range(3):
        quick = Relay.async_(caller.name, WaitsOnFirstRun.new({}, queue=SLOW_QUEUE))
        assert Relay.await_(quick, timeout=RESULT_TIMEOUT) == Ok("done")
    gate = new_gate()
    blocked = Relay.async_many(
        caller.name, [WaitsOnFirstRun.new({"gate": gate}, queue=SLOW_QUEUE) for _ in range(2)]
    )
    wait_until(
        lambda: producer_figures()["busy"] == 2,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"the blocked jobs did not both start: {producer_figures()}",
    )
    prefetched = Relay.async_many(
        caller.name, [WaitsOnFirstRun.new({}, queue=SLOW_QUEUE) for _ in range(2)]
    )
    wait_until(
        lambda: producer_figures()["prefetched"] == 2,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"the jobs were not claimed ahead: {producer_figures()}",
    )
    prefetched_ids = [relay.job.id for relay in prefetched if relay.job.id is not None]
    assert len(prefetched_ids) == 2

    with rows_locked(database_dsn, prefix, prefetched_ids):
        only_actor(ProducerActor).stop()
        assert logged(caplog, "relay_actors.producer", "unclaim_failed") == 1
        for job_id in prefetched_ids:
            assert job_state(db, prefix, job_id) == "executing"

    wait_for_restart(worker, f"producer {SLOW_QUEUE}")
    assert Relay.await_many(prefetched, timeout=RESULT_TIMEOUT) == [Ok("done"), Ok("done")]
    for job_id in prefetched_ids:
        row = read_job(db, prefix, job_id)
        assert row["state"] == "completed"
        assert row["attempt"] == 1
        assert RUNS[job_id] == 1
    assert producer_figures()["adopted"] == 2

    # The blocked jobs run on the stopped producer's executors, so no audit
    # may adopt them, and each ends after one run.
    GATES[gate].set()
    assert Relay.await_many(blocked, timeout=RESULT_TIMEOUT) == [Ok("done"), Ok("done")]
    for relay in blocked:
        assert relay.job.id is not None
        assert RUNS[relay.job.id] == 1
    assert producer_figures()["adopted"] == 2
    wait_until_all_recorded(worker)


def test_acker_stop_not_delayed_by_ticks(
    short_statement_timeout: None,
    start_instance: Callable[..., Instance],
    new_gate: Callable[[], str],
    database_dsn: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An acker whose writes time out stops after its final write, not after its queued ticks.

    The instance ticks the acker every 0.1 s, so during each failed write of
    LOCK_WAIT_MS about five ticks queue up. Without a pause after a failure,
    each of them would run one more write that times out, and a stop queued
    behind them would wait for all of those.
    """
    caller = start_instance(queues={})
    worker = start_instance(queues={QUICK_QUEUE: 2}, poll_interval=0.2)
    gate = new_gate()
    _, job_id = start_gated_job(caller, WaitsOnFirstRun, gate)

    with rows_locked(database_dsn, prefix, [job_id]):
        GATES[gate].set()
        wait_for_failed_writes(caplog, 2, "the acker did not fail to write the outcome twice")
        acker = worker.acker.ref
        assert acker is not None
        started = time.monotonic()
        acker.stop()
        stop_seconds = time.monotonic() - started
        failed_writes = logged(caplog, "relay_actors.acker", "record_failed")

    # At most the write in progress and the final write in on_stop, each
    # LOCK_WAIT_MS, plus 0.5 s for scheduling on a loaded machine.
    assert stop_seconds < 2 * LOCK_WAIT_MS / 1000 + 0.5
    # Two failed writes before the stop, the one in progress and the final one.
    assert failed_writes <= 4


def test_outcome_kept_without_acker(
    short_statement_timeout: None,
    start_instance: Callable[..., Instance],
    new_gate: Callable[[], str],
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A producer whose write failed while no acker runs keeps the outcome for its next claim.

    The acker is gone, as in the second before the supervisor replaces a
    crashed one, and another session locks the job's row, so the producer's
    write of the outcome times out. The producer must keep the outcome and
    write it once the lock goes, instead of giving it up to the audit, which
    would run the job a second time.
    """
    caller = start_instance(queues={})
    worker = start_instance(queues={QUICK_QUEUE: 2}, **FAST_AUDIT)
    worker._supervisor.stop_child("acker")
    gate = new_gate()
    relay, job_id = start_gated_job(caller, WaitsOnFirstRun, gate)

    with rows_locked(database_dsn, prefix, [job_id]):
        GATES[gate].set()
        wait_until(
            lambda: logged(caplog, "relay_actors.producer", "claim_failed") >= 1,
            timeout=RESULT_TIMEOUT,
            message="the producer's write never timed out on the locked row",
        )
        assert logged(caplog, "relay_actors.acker", "record_lost") == 0
        assert len(worker.unrecorded) == 1

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("done")
    assert job_state(db, prefix, job_id) == "completed"
    assert RUNS[job_id] == 1
    assert worker.statistics()[f"producer {QUICK_QUEUE}"]["adopted"] == 0
    assert logged(caplog, "relay_actors.acker", "record_lost") == 0
    wait_until_all_recorded(worker)
