"""A job's life on an in-process instance: snoozes, schedules, priorities, retries and endings.

Each test reads the job's row, the truth, besides the await result. Times
of attempts are compared on the database clock, so the checks hold however
loaded the machine is.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from relay_actors import Error, Instance, JobError, Ok, Reason, Relay, RelayNotCommitted
from relay_actors.actors.producer import ProducerActor
from relay_actors.failures import AttemptLost, JobTimeout
from tests.conftest import count_jobs, wait_until
from tests.workers import (
    QUICK_QUEUE,
    SINGLE_QUEUE,
    SLOW_QUEUE,
    Echo,
    Flaky,
    Overruns,
    Sleep,
    SnoozesOnce,
    WaitsForCancel,
    WaitsForFile,
)

RESULT_TIMEOUT = 10.0
# Tolerance of timing asserts, for a loaded machine with two cores.
SLACK_SECONDS = 1.0
# Staging and polling every 0.2 s keep retries and snoozes quick.
POLL_INTERVAL = 0.2
# A queue that no instance in these tests runs, so its jobs stay available.
PARKED_QUEUE = "parked"


def read_job(conn: psycopg.Connection[Any], schema: str, job_id: int | None) -> dict[str, Any]:
    """Return the row of job `job_id` as a dict, failing the test if it has none."""
    query = sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(schema, "jobs"))
    row = conn.cursor(row_factory=dict_row).execute(query, (job_id,)).fetchone()
    assert row is not None, f"job {job_id} has no row in {schema}.jobs"
    return row


def job_id(relay: Relay[Any]) -> int:
    """Return the id of the relay's inserted job."""
    assert relay.job.id is not None
    return relay.job.id


def job_exists(conn: psycopg.Connection[Any], schema: str, job_id: int | None) -> bool:
    query = sql.SQL("SELECT 1 FROM {} WHERE id = %s").format(sql.Identifier(schema, "jobs"))
    return conn.execute(query, (job_id,)).fetchone() is not None


def wait_for_state(
    conn: psycopg.Connection[Any], schema: str, job_id: int | None, state: str
) -> None:
    wait_until(
        lambda: read_job(conn, schema, job_id)["state"] == state,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"job {job_id} is {read_job(conn, schema, job_id)['state']}, not {state}",
    )


def timed_await(relay: Relay[Any], timeout: float, **options: Any) -> tuple[Any, float]:
    """Await `relay` and return the result with the seconds taken."""
    started = time.monotonic()
    result = Relay.await_(relay, timeout=timeout, **options)
    return result, time.monotonic() - started


def test_snooze_reschedules_job(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(poll_interval=POLL_INTERVAL)
    snooze_seconds = 1.5
    relay = Relay.async_(instance.name, SnoozesOnce.new({"seconds": snooze_seconds}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.SNOOZED)

    snoozed = read_job(db, prefix, relay.job.id)
    assert snoozed["state"] == "scheduled"
    assert snoozed["meta"]["snoozed"] == 1
    assert snoozed["max_attempts"] == SnoozesOnce.max_attempts + 1
    assert snoozed["attempt"] == 1
    assert snoozed["scheduled_at"] - snoozed["attempted_at"] >= timedelta(seconds=snooze_seconds)

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT, with_retries=True) == Ok(1)
    ran = read_job(db, prefix, relay.job.id)
    assert ran["state"] == "completed"
    assert ran["attempt"] == 2
    assert ran["attempted_at"] >= snoozed["scheduled_at"]


def test_scheduled_job_waits_for_time(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(poll_interval=POLL_INTERVAL)
    relay = Relay.async_(instance.name, Echo.new({"value": "later"}, scheduled_in=1.5))
    assert relay.job.state == "scheduled"

    assert Relay.await_(relay, timeout=0.5) == Error(Reason.TIMEOUT)
    assert read_job(db, prefix, relay.job.id)["state"] == "scheduled"

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("later")
    row = read_job(db, prefix, relay.job.id)
    assert row["attempt"] == 1
    assert row["attempted_at"] >= row["scheduled_at"]
    assert row["scheduled_at"] - row["inserted_at"] >= timedelta(seconds=1.4)


def test_priority_sets_run_order(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    instance = start_instance(queues={SINGLE_QUEUE: 1})
    gate = tmp_path / "gate"
    blocker = Relay.async_(
        instance.name, WaitsForFile.new({"path": str(gate), "seconds": 30}, queue=SINGLE_QUEUE)
    )
    wait_for_state(db, prefix, blocker.job.id, "executing")

    priorities = list(range(9, -1, -1))
    relays = [
        Relay.async_(
            instance.name, Echo.new({"value": priority}, queue=SINGLE_QUEUE, priority=priority)
        )
        for priority in priorities
    ]
    gate.touch()
    assert Relay.await_(blocker, timeout=RESULT_TIMEOUT) == Ok("released")
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(p) for p in priorities]

    # Jobs claimed together share attempted_at and start in the claim's order,
    # which is by priority.
    query = sql.SQL(
        "SELECT priority FROM {} WHERE id = ANY(%s) ORDER BY attempted_at, priority, id"
    ).format(sql.Identifier(prefix, "jobs"))
    ids = [relay.job.id for relay in relays]
    run_order = [row[0] for row in db.execute(query, (ids,)).fetchall()]
    assert run_order == list(range(10))


def test_exhausted_job_discarded(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(poll_interval=POLL_INTERVAL)
    relay = Relay.async_(instance.name, Flaky.new({"succeed_on": 99}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT, with_retries=True)

    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "builtins.RuntimeError"
    assert result.reason.message == "attempt 3 failed"
    assert result.reason.attempt == Flaky.max_attempts
    row = read_job(db, prefix, relay.job.id)
    assert row["state"] == "discarded"
    assert row["discarded_at"] is not None
    assert row["attempt"] == Flaky.max_attempts
    assert [error["attempt"] for error in row["errors"]] == [1, 2, 3]
    assert [error["message"] for error in row["errors"]] == [
        f"attempt {attempt} failed" for attempt in (1, 2, 3)
    ]


def test_worker_timeout_fails_attempt(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(queues={QUICK_QUEUE: 1})
    overrun_seconds = 5.0
    started = time.monotonic()
    overrun = Relay.async_(instance.name, Overruns.new({"seconds": overrun_seconds}))
    result = Relay.await_(overrun, timeout=RESULT_TIMEOUT)

    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == f"{JobTimeout.__module__}.{JobTimeout.__qualname__}"
    assert "0.3 s" in result.reason.message
    assert read_job(db, prefix, overrun.job.id)["state"] == "discarded"

    # The only executor is free again while the overrunning thread still sleeps.
    after = Relay.async_(instance.name, Echo.new({"value": "served"}))
    assert Relay.await_(after, timeout=RESULT_TIMEOUT) == Ok("served")
    assert time.monotonic() - started < overrun_seconds


def test_cancel_available_job(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Echo.new({"value": 1}, queue=PARKED_QUEUE))
    assert instance.cancel_job(job_id(relay), reason="no longer needed") is True

    result, seconds = timed_await(relay, RESULT_TIMEOUT)
    assert result == Error(Reason.CANCELLED)
    assert seconds < SLACK_SECONDS
    row = read_job(db, prefix, relay.job.id)
    assert row["state"] == "cancelled"
    assert row["cancelled_at"] is not None
    assert row["attempt"] == 0
    assert row["meta"]["cancel_reason"] == "no longer needed"
    assert instance.cancel_job(job_id(relay)) is False


def test_cancel_running_job(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    instance = start_instance()
    marker = tmp_path / "cancelled"
    relay = Relay.async_(instance.name, WaitsForCancel.new({"seconds": 30, "marker": str(marker)}))
    wait_for_state(db, prefix, relay.job.id, "executing")

    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(timed_await, relay, RESULT_TIMEOUT)
        wait_until(
            lambda: relay.mailbox.proxy().statistics().get(timeout=5)["waiting"] == 1,
            timeout=5.0,
            message="the await never reached the mailbox",
        )
        cancelled_at = time.monotonic()
        assert instance.cancel_job(job_id(relay), reason="stop now") is True
        result, _ = waiting.result(timeout=RESULT_TIMEOUT + 5)
        reached_caller = time.monotonic() - cancelled_at

    assert result == Error(Reason.CANCELLED)
    assert reached_caller < SLACK_SECONDS
    wait_until(
        marker.exists,
        timeout=5.0,
        message="the running job never saw self.cancelled() turn true",
    )
    wait_until(
        lambda: instance.statistics()[f"producer {SLOW_QUEUE}"]["busy"] == 0,
        timeout=5.0,
        message="the cancelled job never returned",
    )
    # What the job returned after its cancellation is dropped.
    assert read_job(db, prefix, relay.job.id)["state"] == "cancelled"
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.CANCELLED)


def test_pruner_deletes_finished_jobs(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    # One kept outcome per mailbox: the second result pushes the first out, so
    # awaiting the first reads its row again.
    instance = start_instance(prune_after=0.5, prune_interval=0.2, max_outcomes=1)
    old = Relay.async_(instance.name, Echo.new({"value": "old"}))
    assert Relay.await_(old, timeout=RESULT_TIMEOUT) == Ok("old")
    unfinished = Relay.async_(instance.name, Echo.new({"value": 0}, queue=PARKED_QUEUE))
    newer = Relay.async_(instance.name, Echo.new({"value": "newer"}))
    assert Relay.await_(newer, timeout=RESULT_TIMEOUT) == Ok("newer")

    wait_until(
        lambda: not job_exists(db, prefix, old.job.id),
        timeout=RESULT_TIMEOUT,
        message="the pruner never deleted the completed job",
    )
    assert Relay.await_(old, timeout=RESULT_TIMEOUT) == Error(Reason.NOT_FOUND)
    assert read_job(db, prefix, unfinished.job.id)["state"] == "available"


def test_shutdown_releases_running_job(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    caller = start_instance(queues={})
    grace = 0.5
    worker = start_instance(queues={SLOW_QUEUE: 2}, shutdown_grace=grace)
    retried = Relay.async_(caller.name, Sleep.new({"seconds": 5}))
    last = Relay.async_(caller.name, Sleep.new({"seconds": 5}, max_attempts=1))
    for relay in (retried, last):
        wait_for_state(db, prefix, relay.job.id, "executing")

    started = time.monotonic()
    worker.stop()
    stop_seconds = time.monotonic() - started
    # Stopping the executors and actors takes up to a few seconds after the grace period.
    assert stop_seconds <= grace + 3.0

    lost_type = f"{AttemptLost.__module__}.{AttemptLost.__qualname__}"
    for relay, state in ((retried, "available"), (last, "discarded")):
        row = read_job(db, prefix, relay.job.id)
        assert row["state"] == state
        assert row["attempt"] == 1
        assert [error["type"] for error in row["errors"]] == [lost_type]
        assert row["errors"][0]["node"] == worker.node_id
        result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
        assert isinstance(result, Error)
        assert isinstance(result.reason, JobError)
        assert result.reason.type == lost_type
        assert result.reason.attempt == 1


def test_transactional_insert_commits(
    start_instance: Callable[..., Instance],
    database_dsn: str,
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    instance = start_instance()
    with psycopg.connect(database_dsn) as conn:
        relays = Relay.async_many(
            instance.name, [Echo.new({"value": i}) for i in range(3)], conn=conn
        )
        with pytest.raises(RelayNotCommitted):
            Relay.await_many(relays, timeout=1.0)
        assert count_jobs(db, prefix) == 0
        conn.commit()
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(3)]


def test_transactional_insert_rolls_back(
    start_instance: Callable[..., Instance],
    database_dsn: str,
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    instance = start_instance()
    with psycopg.connect(database_dsn) as conn:
        relays = Relay.async_many(
            instance.name, [Echo.new({"value": i}) for i in range(3)], conn=conn
        )
        conn.rollback()
    started = time.monotonic()
    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)
    assert results == [Error(Reason.NOT_FOUND)] * 3
    assert time.monotonic() - started < SLACK_SECONDS
    assert count_jobs(db, prefix) == 0


def test_unknown_worker_fails_fast(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    missing = dataclasses.replace(Echo.new({"value": 1}), worker="tests.workers.NoSuchWorker")
    relay = Relay.async_(instance.name, missing)
    result = Relay.await_(relay, timeout=1.0)

    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError), f"no failure within 1 s: {result!r}"
    assert result.reason.type == "relay_actors.failures.UnknownWorker"
    assert "tests.workers.NoSuchWorker" in result.reason.message
    assert instance.node_id in result.reason.message
    assert result.reason.node == instance.node_id


def test_supervisor_restarts_stopped_producer(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance(queues={QUICK_QUEUE: 2})
    producers = pykka.ActorRegistry.get_by_class(ProducerActor)
    assert len(producers) == 1, f"expected one producer in this process, found {producers}"
    # Stopping the actor from outside the instance looks to the supervisor like a crash.
    producers[0].stop()

    wait_until(
        lambda: instance.statistics()["restarts"].get(f"producer {QUICK_QUEUE}") == 1,
        timeout=5.0,
        message=lambda: f"no producer restart; restarts: {instance.statistics()['restarts']}",
    )
    relay = Relay.async_(instance.name, Echo.new({"value": "after restart"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("after restart")
