"""Races between caller threads, mailboxes, the pool and the acker."""

from __future__ import annotations

import dataclasses
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from relay_actors import Error, Instance, Ok, Reason, Relay
from relay_actors.actors.messages import Record
from relay_actors.actors.outcomes import from_return
from relay_actors.store.connect import ConnectionPool
from tests.workers import Echo, Sleep

# An await ends by its timeout plus this tolerance, with other work on 2 cores.
DEADLINE_TOLERANCE_SECONDS = 0.5


def test_await_survives_inserting_thread_end(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    inserted: list[Relay[Any]] = []
    release = threading.Event()

    def insert_then_wait() -> None:
        inserted.append(Relay.async_(instance.name, Sleep.new({"seconds": 1.0, "value": 42})))
        release.wait(5)

    inserter = threading.Thread(target=insert_then_wait)
    inserter.start()
    while not inserted:
        release.wait(0.01)
    # The inserting thread, and with it its mailbox, ends during the await.
    threading.Timer(0.3, release.set).start()
    threading.Timer(0.5, gc.collect).start()
    started = time.monotonic()
    result = Relay.await_(inserted[0], timeout=4.0)
    elapsed = time.monotonic() - started
    inserter.join()
    assert result == Ok(42)
    assert elapsed < 3.0


def test_await_with_busy_pool_times_out(
    start_instance: Callable[..., Instance],
) -> None:
    instance = start_instance(pool_size=1)
    inserted: list[Relay[Any]] = []
    thread = threading.Thread(
        target=lambda: inserted.append(
            Relay.async_(instance.name, Sleep.new({"seconds": 3.0, "value": 1}))
        )
    )
    thread.start()
    thread.join()
    # The inserting thread has ended, so the await reads the row, but the
    # only pooled connection is taken.
    with instance.pool.connection():
        started = time.monotonic()
        result = Relay.await_(inserted[0], timeout=0.5)
        elapsed = time.monotonic() - started
    assert result == Error(Reason.TIMEOUT)
    assert elapsed < 0.5 + DEADLINE_TOLERANCE_SECONDS


def test_pool_waiter_wakes_on_discard(database_dsn: str) -> None:
    pool = ConnectionPool(database_dsn, "test-pool", max_size=1)
    holding = threading.Event()

    def hold_then_break() -> None:
        with pool.connection() as conn:
            holding.set()
            time.sleep(0.3)
            conn.close()

    holder = threading.Thread(target=hold_then_break)
    holder.start()
    holding.wait(5)
    started = time.monotonic()
    with pool.connection(timeout=5.0) as conn:
        elapsed = time.monotonic() - started
        assert conn.execute("SELECT 1").fetchone() == (1,)
    holder.join()
    pool.close()
    assert elapsed < 2.0


def test_stale_attempt_in_batch_loses(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any]
) -> None:
    instance = start_instance(queues={})
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    assert relay.job.id is not None
    # As if this node had claimed the job's second attempt.
    db.execute(
        sql.SQL(
            "UPDATE {} SET state = 'executing', attempt = 2, attempted_by = %s WHERE id = %s"
        ).format(sql.Identifier(instance.prefix, "jobs")),
        (instance.node_id, relay.job.id),
    )
    stale = from_return(
        dataclasses.replace(relay.job, attempt=1), "stale", instance.prefix, instance.node_id
    )
    fresh = from_return(
        dataclasses.replace(relay.job, attempt=2), "fresh", instance.prefix, instance.node_id
    )
    acker = instance._supervisor.slot("acker")
    assert acker.tell(Record(stale))
    assert acker.tell(Record(fresh))
    assert Relay.await_(relay, timeout=3.0) == Ok("fresh")
    row = db.execute(
        sql.SQL("SELECT state, attempt FROM {} WHERE id = %s").format(
            sql.Identifier(instance.prefix, "jobs")
        ),
        (relay.job.id,),
    ).fetchone()
    assert row == ("completed", 2)
