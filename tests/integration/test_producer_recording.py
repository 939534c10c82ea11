"""A producer keeps the jobs it claimed along with outcomes when a later step fails."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from relay_actors import Instance, Ok, Relay
from relay_actors.actors.recording import OutcomeWriter
from tests.conftest import wait_until
from tests.workers import SLOW_QUEUE, WaitsForCancel, WaitsForFile

RESULT_TIMEOUT = 8.0


def read_state(conn: psycopg.Connection[Any], schema: str, job_id: int | None) -> tuple[str, str]:
    query = sql.SQL("SELECT state, attempted_by FROM {} WHERE id = %s").format(
        sql.Identifier(schema, "jobs")
    )
    row = conn.execute(query, (job_id,)).fetchone()
    assert row is not None, f"job {job_id} not found"
    return row[0], row[1]


def test_claim_survives_failed_resend(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A job claimed by record_and_claim must run even if the later resend statement fails.

    The resend runs on its own after the claim committed, so a connection lost
    between the two statements is simulated by a connection that fails the
    first resend.
    """
    original = OutcomeWriter._resend_held_back
    failures: list[int] = []

    class LostConnection:
        """Stands for a connection that fails its next statement."""

        def execute(self, *args: Any, **kwargs: Any) -> None:
            raise psycopg.OperationalError("simulated: connection lost after the commit")

    def fail_first_resend(
        self: OutcomeWriter,
        conn: psycopg.Connection[Any],
        batch: list[Any],
        notifications: list[Any],
        recorded: set[tuple[int, int]],
    ) -> None:
        if len(recorded) != len(batch) and not failures:
            failures.append(len(batch))
            original(self, LostConnection(), batch, notifications, recorded)  # type: ignore[arg-type]
            return
        original(self, conn, batch, notifications, recorded)

    monkeypatch.setattr(OutcomeWriter, "_resend_held_back", fail_first_resend)

    caller = start_instance(queues={})
    worker = start_instance(queues={SLOW_QUEUE: 1}, shutdown_grace=0.5)
    released = tmp_path / "released"
    released.touch()

    cancelled = Relay.async_(
        caller.name,
        WaitsForCancel.new({"seconds": 10, "marker": str(tmp_path / "marker")}),
    )
    wait_until(
        lambda: read_state(db, prefix, cancelled.job.id)[0] == "executing",
        timeout=RESULT_TIMEOUT,
        message="the cancelled job never started",
    )
    # The only executor is busy, so this job stays available until the
    # statement that records the cancelled job's outcome claims it.
    follower = Relay.async_(caller.name, WaitsForFile.new({"path": str(released), "seconds": 5}))
    assert caller.cancel_job(cancelled.job.id or 0)

    result = Relay.await_(follower, timeout=RESULT_TIMEOUT)

    assert failures, "the resend path never ran, so the scenario was not reproduced"
    state, attempted_by = read_state(db, prefix, follower.job.id)
    assert result == Ok("released"), (
        f"follower job is {state} on {attempted_by} (worker node {worker.node_id}): "
        f"await returned {result!r}"
    )
