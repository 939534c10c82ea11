"""Signals that a node must not miss: its heartbeat while it stops, and cancellations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from relay_actors import Error, Instance, Ok, Reason, Relay
from relay_actors.actors.listener import ListenerActor
from relay_actors.actors.producer import ProducerActor
from tests.conftest import wait_until
from tests.restarts import (
    RESTART_TIMEOUT,
    only_actor,
    start_cancellable_job,
    wait_for_cancellation_seen,
    wait_for_restart,
)
from tests.workers import SLOW_QUEUE, Sleep

RESULT_TIMEOUT = 15.0
# Heartbeats every 0.2 s and rescue after 1 s, so a node whose heartbeats stop
# loses its executing jobs within about a second.
FAST_RESCUE = {"heartbeat_interval": 0.2, "rescue_after": 1.0, "poll_interval": 0.2}


def read_job(conn: psycopg.Connection[Any], schema: str, job_id: int | None) -> dict[str, Any]:
    query = sql.SQL("SELECT * FROM {} WHERE id = %s").format(sql.Identifier(schema, "jobs"))
    row = conn.cursor(row_factory=dict_row).execute(query, (job_id,)).fetchone()
    assert row is not None, f"job {job_id} has no row in {schema}.jobs"
    return row


def test_stopping_node_job_not_rescued(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    """A job that ends within the shutdown grace period keeps its one attempt.

    The node is alive during the grace period, so no lifeline may rescue the
    job and run it a second time elsewhere.
    """
    caller = start_instance(queues={})
    worker = start_instance(queues={SLOW_QUEUE: 1}, shutdown_grace=8.0, **FAST_RESCUE)
    relay = Relay.async_(caller.name, Sleep.new({"seconds": 4, "value": "slept"}))
    wait_until(
        lambda: read_job(db, prefix, relay.job.id)["attempted_by"] == worker.node_id,
        timeout=RESULT_TIMEOUT,
        message="the worker node never claimed the job",
    )
    start_instance(queues={SLOW_QUEUE: 1}, **FAST_RESCUE)

    stopper = threading.Thread(target=worker.stop, name="stop-worker")
    stopper.start()
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    stopper.join(timeout=RESULT_TIMEOUT)
    assert not stopper.is_alive(), "worker.stop() did not return"

    assert result == Ok("slept")
    row = read_job(db, prefix, relay.job.id)
    assert row["errors"] == []
    assert row["attempt"] == 1
    assert row["state"] == "completed"


def test_cancel_reaches_job_after_listener_restart(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    """A cancellation sent while the node's listener was down still sets the running flag.

    Notifications are only hints, so after its listener reconnects a node must
    read from the rows which of its running jobs were cancelled.
    """
    instance = start_instance(queues={SLOW_QUEUE: 2})
    marker = tmp_path / "cancelled"
    relay = start_cancellable_job(instance, db, prefix, marker)

    # The supervisor restarts a stopped listener within about a second.
    only_actor(ListenerActor).stop()
    assert instance.cancel_job(relay.job.id or 0, reason="stop now") is True
    wait_for_restart(instance, "listener")
    wait_until(
        lambda: instance.statistics()["listener"]["connected"],
        timeout=RESTART_TIMEOUT,
        message="the restarted listener never connected",
    )

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.CANCELLED)
    wait_for_cancellation_seen(marker)


def test_cancel_reaches_job_after_producer_restart(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    """A job that outlives a restart of its queue's producer can still be cancelled."""
    instance = start_instance(queues={SLOW_QUEUE: 2})
    marker = tmp_path / "cancelled"
    relay = start_cancellable_job(instance, db, prefix, marker)

    # Stopping the actor from outside the instance looks to the supervisor like a crash.
    only_actor(ProducerActor).stop()
    wait_for_restart(instance, f"producer {SLOW_QUEUE}")
    assert instance.cancel_job(relay.job.id or 0, reason="stop now") is True

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.CANCELLED)
    wait_for_cancellation_seen(marker)
