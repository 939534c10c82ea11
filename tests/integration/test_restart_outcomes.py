"""Outcomes that reach a producer or the acker while the supervisor replaces it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from relay_actors import Instance, Ok, Relay
from relay_actors.actors.acker import AckerActor
from relay_actors.actors.producer import ProducerActor
from tests.conftest import job_state, wait_until
from tests.restarts import only_actor, wait_for_restart
from tests.workers import SLOW_QUEUE, WaitsForFile

RESULT_TIMEOUT = 10.0
# Seconds a WaitsForFile job waits for its file before it gives up.
JOB_SECONDS = 60


@contextmanager
def jobs_table_locked(database_dsn: str, prefix: str) -> Iterator[None]:
    """Hold an EXCLUSIVE lock on the jobs table, so every write to it waits."""
    locker = psycopg.connect(database_dsn)
    try:
        locker.execute(
            sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.Identifier(prefix, "jobs"))
        )
        yield
    finally:
        locker.rollback()
        locker.close()


def wait_for_lock_wait(db: psycopg.Connection[Any], application_name: str) -> None:
    """Wait until the backend named `application_name` waits for a lock."""
    query = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE application_name = %s AND wait_event_type = 'Lock'"
    )

    def waiting() -> bool:
        row = db.execute(query, (application_name[:63],)).fetchone()
        return row is not None and row[0] > 0

    wait_until(waiting, timeout=RESULT_TIMEOUT, message=f"{application_name!r} never blocked")


def start_waiting_job(
    instance: Instance, db: psycopg.Connection[Any], prefix: str, path: Path
) -> Relay[str]:
    """Insert a WaitsForFile job for `path` and wait until it runs."""
    job = WaitsForFile.new({"path": str(path), "seconds": JOB_SECONDS})
    relay = Relay.async_(instance.name, job)
    wait_until(
        lambda: job_state(db, prefix, relay.job.id) == "executing",
        timeout=RESULT_TIMEOUT,
        message="the job never started",
    )
    return relay


def test_producer_restart_keeps_queued_outcome(
    start_instance: Callable[..., Instance],
    database_dsn: str,
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    """An outcome queued behind the producer's stop is still recorded."""
    instance = start_instance(queues={SLOW_QUEUE: 2}, poll_interval=0.2)
    release = tmp_path / "release"
    relay = start_waiting_job(instance, db, prefix, release)
    producer = only_actor(ProducerActor)

    with jobs_table_locked(database_dsn, prefix):
        # The idle executor makes the producer claim every poll. The claim
        # now waits for the lock, so the stop and the outcome queue up behind it.
        wait_for_lock_wait(db, f"relay_actors producer {SLOW_QUEUE} {instance.node_id}")
        producer.stop(block=False)
        release.write_text("go\n")
        # An executor removes its attempt from RunningAttempts only after it
        # sent the outcome, which now waits in the producer's inbox behind the stop.
        assert instance._attempts[SLOW_QUEUE].wait_until_empty(RESULT_TIMEOUT)

    wait_for_restart(instance, f"producer {SLOW_QUEUE}")
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("released")
    assert job_state(db, prefix, relay.job.id) == "completed"


def test_acker_restart_keeps_queued_outcome(
    start_instance: Callable[..., Instance],
    database_dsn: str,
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    """An outcome queued behind the acker's stop is still recorded."""
    instance = start_instance(queues={SLOW_QUEUE: 2})
    first_release = tmp_path / "first"
    second_release = tmp_path / "second"
    first = start_waiting_job(instance, db, prefix, first_release)
    second = start_waiting_job(instance, db, prefix, second_release)

    # Once their producer is gone, the executors hand both outcomes to the acker.
    only_actor(ProducerActor).stop()
    wait_for_restart(instance, f"producer {SLOW_QUEUE}")
    acker = only_actor(AckerActor)

    with jobs_table_locked(database_dsn, prefix):
        first_release.write_text("go\n")
        wait_for_lock_wait(db, f"relay_actors acker {instance.node_id}")
        acker.stop(block=False)
        second_release.write_text("go\n")
        assert instance._attempts[SLOW_QUEUE].wait_until_empty(RESULT_TIMEOUT)

    wait_for_restart(instance, "acker")
    assert Relay.await_(first, timeout=RESULT_TIMEOUT) == Ok("released")
    assert Relay.await_(second, timeout=RESULT_TIMEOUT) == Ok("released")
    assert job_state(db, prefix, second.job.id) == "completed"
