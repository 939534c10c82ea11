"""Jobs a producer claims ahead of its executors: returned at shutdown and at a restart,
dropped when cancelled."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pykka
from psycopg import sql
from psycopg.rows import dict_row

from relay_actors import Error, Instance, Ok, Reason, Relay
from relay_actors.actors.producer import ProducerActor
from tests.conftest import wait_until
from tests.workers import SLOW_QUEUE, WaitsForFile

RESULT_TIMEOUT = 10.0


def read_job(conn: psycopg.Connection[Any], schema: str, job_id: int | None) -> dict[str, Any]:
    query = sql.SQL("SELECT state, attempt, attempted_by FROM {} WHERE id = %s").format(
        sql.Identifier(schema, "jobs")
    )
    with conn.cursor(row_factory=dict_row) as cursor:
        row = cursor.execute(query, (job_id,)).fetchone()
    assert row is not None, f"job {job_id} not found"
    return row


def producer_figures(worker: Instance) -> dict[str, int]:
    figures: dict[str, int] = worker.statistics()[f"producer {SLOW_QUEUE}"]
    return figures


def start_with_prefetched_job(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str, gate: Path
) -> tuple[Instance, Instance, Relay[str], Relay[str]]:
    """Start a one-executor node busy with a blocked job and one more job claimed ahead."""
    caller = start_instance(queues={})
    worker = start_instance(queues={SLOW_QUEUE: 1}, shutdown_grace=0.3)
    opened = gate.parent / "open"
    opened.touch()
    # Quick attempts make the producer claim ahead of its executors.
    for _ in range(3):
        quick = Relay.async_(caller.name, WaitsForFile.new({"path": str(opened), "seconds": 5}))
        assert Relay.await_(quick, timeout=RESULT_TIMEOUT) == Ok("released")
    blocked = Relay.async_(caller.name, WaitsForFile.new({"path": str(gate), "seconds": 30}))
    wait_until(
        lambda: read_job(db, prefix, blocked.job.id)["state"] == "executing",
        timeout=RESULT_TIMEOUT,
        message="the blocked job never started",
    )
    waiting = Relay.async_(caller.name, WaitsForFile.new({"path": str(opened), "seconds": 5}))
    wait_until(
        lambda: producer_figures(worker)["prefetched"] == 1,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"the second job was not claimed ahead: {producer_figures(worker)}",
    )
    return caller, worker, blocked, waiting


def test_shutdown_returns_prefetched_job(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    _, worker, _, waiting = start_with_prefetched_job(start_instance, db, prefix, gate)
    claimed = read_job(db, prefix, waiting.job.id)
    assert claimed["state"] == "executing"
    assert claimed["attempt"] == 1

    worker.stop()

    returned = read_job(db, prefix, waiting.job.id)
    assert returned["state"] == "available"
    assert returned["attempt"] == 0
    assert returned["attempted_by"] is None
    # The blocked job was released for a retry, so let it finish when it runs again.
    gate.touch()
    start_instance(queues={SLOW_QUEUE: 1})
    assert Relay.await_(waiting, timeout=RESULT_TIMEOUT) == Ok("released")
    assert read_job(db, prefix, waiting.job.id)["attempt"] == 1


def test_cancelled_prefetched_job_never_runs(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    caller, worker, blocked, waiting = start_with_prefetched_job(start_instance, db, prefix, gate)
    assert waiting.job.id is not None
    assert caller.cancel_job(waiting.job.id)
    wait_until(
        lambda: producer_figures(worker)["prefetched"] == 0,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"the cancelled job is still claimed ahead: {producer_figures(worker)}",
    )

    gate.touch()

    assert Relay.await_(blocked, timeout=RESULT_TIMEOUT) == Ok("released")
    wait_until(
        lambda: producer_figures(worker)["busy"] == 0,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"the executor did not become idle: {producer_figures(worker)}",
    )
    assert Relay.await_(waiting, timeout=RESULT_TIMEOUT) == Error(Reason.CANCELLED)
    assert read_job(db, prefix, waiting.job.id)["state"] == "cancelled"
    assert producer_figures(worker)["claimed"] == 5


def test_restarted_producer_returns_prefetched_job(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    _, worker, _, waiting = start_with_prefetched_job(start_instance, db, prefix, gate)
    producers = [
        ref
        for ref in pykka.ActorRegistry.get_by_class(ProducerActor)
        if ref.proxy().statistics().get(timeout=RESULT_TIMEOUT)["prefetched"] == 1
    ]
    assert len(producers) == 1, f"expected one producer with a prefetched job, found {producers}"
    # Stopping the actor from outside the instance looks to the supervisor like a crash.
    producers[0].stop()

    # The stopped producer returns the job uncounted, and the restarted one
    # runs it as attempt 1. Had it stayed claimed, nothing would run it while
    # this node heartbeats.
    wait_until(
        lambda: worker.statistics()["restarts"].get(f"producer {SLOW_QUEUE}") == 1,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"no producer restart; restarts: {worker.statistics()['restarts']}",
    )
    assert Relay.await_(waiting, timeout=RESULT_TIMEOUT) == Ok("released")
    assert read_job(db, prefix, waiting.job.id)["attempt"] == 1
    # Let the blocked job's thread, left by the stopped executor, finish.
    gate.touch()
