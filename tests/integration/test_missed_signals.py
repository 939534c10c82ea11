"""Signals that a node must not miss: its heartbeat while it stops, and cancellations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from relay_actors import Instance, Ok, Relay
from tests.conftest import wait_until
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
