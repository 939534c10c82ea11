"""Awaits and stops at the edges: adopted relays, failing row reads and producer restarts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from relay_actors import Error, Instance, Ok, Reason, Relay
from relay_actors.actors.producer import ProducerActor
from tests.conftest import job_state, wait_until
from tests.restarts import (
    RESTART_TIMEOUT,
    only_actor,
    start_cancellable_job,
    wait_for_cancellation_seen,
    wait_for_restart,
)
from tests.workers import SLOW_QUEUE, Echo, WaitsForFile

RESULT_TIMEOUT = 10.0
# Interval of the safety-net poll, long enough that the poll cannot deliver a
# result within a test, so the await alone must get it.
NO_SAFETY_NET = 600.0
# Time an await may take past its timeout.
AWAIT_TOLERANCE_SECONDS = 2.0


def insert_from_ended_thread(instance: Instance, value: Any) -> Relay[Any]:
    """Insert an Echo job from a thread that then ends, and wait for its mailbox to stop."""
    relays: list[Relay[Any]] = []
    inserter = threading.Thread(
        target=lambda: relays.append(Relay.async_(instance.name, Echo.new({"value": value})))
    )
    inserter.start()
    inserter.join()
    relay = relays[0]
    assert relay.mailbox.actor_stopped.wait(RESULT_TIMEOUT), "the ended thread's mailbox runs on"
    return relay


def test_same_relay_twice_after_thread_ended(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(safety_net_interval=NO_SAFETY_NET)
    relay = insert_from_ended_thread(instance, "twice")
    wait_until(
        lambda: job_state(db, prefix, relay.job.id) == "completed",
        timeout=RESULT_TIMEOUT,
        message=f"job {relay.job.id} did not complete",
    )

    results = Relay.await_many([relay, relay], timeout=1.0)

    assert results[0] == Ok("twice")
    assert results[1] == Ok("twice")


def test_row_result_await_ends_by_timeout(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
) -> None:
    # inline_results=False keeps every result in its row, so each await reads the row.
    instance = start_instance(pool_size=1, plugins=[Relay.plugin(inline_results=False)])
    relay = Relay.async_(instance.name, Echo.new({"value": "in the row"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("in the row")
    # A job scheduled an hour ahead stays cancellable for the whole test.
    other = Relay.async_(instance.name, Echo.new({"value": "later"}, scheduled_in=3600))

    # A cancellation that waits for a row lock holds the pool's only connection.
    locker = psycopg.connect(database_dsn)
    cancelling = threading.Thread(target=instance.cancel_job, args=(other.job.id,))
    try:
        locker.execute(
            sql.SQL("SELECT id FROM {} WHERE id = %s FOR UPDATE").format(
                sql.Identifier(prefix, "jobs")
            ),
            (other.job.id,),
        )
        cancelling.start()
        wait_until(
            lambda: (
                db.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE application_name LIKE 'relay_actors caller%%' "
                    "AND wait_event_type = 'Lock'"
                ).fetchone()
                == (1,)
            ),
            timeout=RESULT_TIMEOUT,
            message="the cancellation did not wait for the row lock",
        )

        results: list[Any] = []
        done = threading.Event()

        def await_again() -> None:
            results.append(Relay.await_(relay, timeout=0.5))
            done.set()

        started = time.monotonic()
        threading.Thread(target=await_again, daemon=True).start()
        ended = done.wait(0.5 + AWAIT_TOLERANCE_SECONDS)
        waited = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
        cancelling.join(RESULT_TIMEOUT)

    assert ended, f"await_(timeout=0.5) still running after {waited:.1f} s"
    assert results == [Error(Reason.TIMEOUT)]


def test_cancel_during_producer_restart(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    instance = start_instance(queues={SLOW_QUEUE: 2})
    marker = tmp_path / "cancelled"
    relay = start_cancellable_job(instance, db, prefix, marker)
    producer = only_actor(ProducerActor)

    # The supervisor checks its actors once a second, so the cancellation
    # usually arrives while no producer runs the queue. If the new producer
    # is already running, the cancellation reaches it the usual way.
    producer.stop(block=False)
    assert producer.actor_stopped.wait(RESTART_TIMEOUT), "the producer did not stop"
    assert instance.cancel_job(relay.job.id or 0, reason="stop now") is True
    wait_for_restart(instance, f"producer {SLOW_QUEUE}")

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.CANCELLED)
    wait_for_cancellation_seen(marker)


def test_stop_waits_across_producer_restart(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    caller = start_instance(queues={})
    worker = start_instance(queues={SLOW_QUEUE: 1}, shutdown_grace=20.0)
    release = tmp_path / "release"
    relay = Relay.async_(caller.name, WaitsForFile.new({"path": str(release), "seconds": 30}))
    wait_until(
        lambda: job_state(db, prefix, relay.job.id) == "executing",
        timeout=RESULT_TIMEOUT,
        message="the job never started",
    )
    # Stopping the actor from outside the instance looks to the supervisor like a crash.
    only_actor(ProducerActor).stop()
    wait_for_restart(worker, f"producer {SLOW_QUEUE}")

    stopper = threading.Thread(target=worker.stop, name="stop-worker")
    stopper.start()
    # stop() must wait for the running job, which waits for the file.
    stopper.join(timeout=2.0)
    returned_early = not stopper.is_alive()
    release.write_text("go\n")
    stopper.join(timeout=RESULT_TIMEOUT)

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("released")
    assert job_state(db, prefix, relay.job.id) == "completed"
    assert not returned_early, "stop() returned while a job was still running"
