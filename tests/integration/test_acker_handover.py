"""Outcomes handed to an acker while it stops, and the acker's pause after a failed write."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest
from psycopg import sql

from relay_actors import Instance, Relay
from relay_actors.actors.acker import RETRY_SECONDS, AckerActor, send_outcome
from relay_actors.actors.inbox import ClosableInbox, take_queued
from relay_actors.actors.messages import AttemptOutcome, Record, Sync, Tick
from relay_actors.actors.slot import ActorSlot
from relay_actors.store import connect
from tests.conftest import job_state, wait_until
from tests.integration.test_fault_adoption import (
    LOCK_WAIT_MS,
    rows_locked,
    wait_for_failed_writes,
)
from tests.integration.test_send_outcome import running_job_with_outcome
from tests.restarts import only_actor
from tests.workers import SLOW_QUEUE, WaitsForFile

RESULT_TIMEOUT = 10.0


class StopsAfterTell:
    """An acker ref that stops its actor right after queueing a message.

    This is the interleaving where the acker stops just after the sender's
    `tell` returned, so the acker's `on_stop` takes the queued outcome and
    writes it.
    """

    def __init__(self, ref: pykka.ActorRef[Any]) -> None:
        self._ref = ref

    def tell(self, message: Any) -> None:
        self._ref.tell(message)
        self._ref.stop(block=True)

    def is_alive(self) -> bool:
        return self._ref.is_alive()


def test_acker_inbox_rejects_tell_after_take() -> None:
    """Once on_stop took the queued Records, a tell raises instead of being dropped."""
    acker = AckerActor(dsn="", prefix="relay_handover", node_id="node", insert_channel="inserts")
    queued = AttemptOutcome(job_id=1, attempt=1, state="completed", status="ok")
    late = AttemptOutcome(job_id=2, attempt=1, state="completed", status="ok")
    acker.actor_ref.tell(Record(queued))

    taken_records = take_queued(acker, Record)

    assert [record.outcome for record in taken_records] == [queued]
    with pytest.raises(pykka.ActorDeadError):
        acker.actor_ref.tell(Record(late))
    # An ask is still queued, so that pykka fails its future when the thread ends.
    acker.actor_ref.ask(Tick(), block=False)
    inbox = acker.actor_inbox
    assert isinstance(inbox, ClosableInbox)
    assert inbox.qsize() == 1


def executing_jobs(
    db: psycopg.Connection[Any], prefix: str, instance: Instance, count: int
) -> list[int]:
    """Insert `count` jobs that no node runs and mark them executing on `instance`'s node."""
    relays = [
        Relay.async_(instance.name, WaitsForFile.new({"path": "unused", "seconds": 1}))
        for _ in range(count)
    ]
    ids = [relay.job.id for relay in relays]
    db.execute(
        sql.SQL(
            "UPDATE {} SET state = 'executing', attempt = 1, attempted_by = %s WHERE id = ANY(%s)"
        ).format(sql.Identifier(prefix, "jobs")),
        (instance.node_id, ids),
    )
    return [job_id for job_id in ids if job_id is not None]


def test_acker_writes_after_successful_sync(
    monkeypatch: pytest.MonkeyPatch,
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Record that arrives after a Sync wrote the batch is written at once, not after a pause.

    The acker's first write times out on a locked row, which pauses its
    writes for RETRY_SECONDS. A Sync right after the lock goes writes the
    batch, so nothing is left to retry, and the next Record's Flush writes.
    """
    monkeypatch.setattr(connect, "STATEMENT_TIMEOUT_MS", LOCK_WAIT_MS)
    caller = start_instance(queues={})
    first, second = executing_jobs(db, prefix, caller, 2)
    acker = start_acker(database_dsn, prefix, caller)
    try:
        with rows_locked(database_dsn, prefix, [first]):
            acker.tell(Record(done(first, caller.node_id)))
            wait_for_failed_writes(caplog, 1, "the acker's write never timed out on the locked row")
        # The acker replies with a future that resolves once the batch is written.
        synced = acker.ask(Sync(), timeout=RESULT_TIMEOUT)
        assert synced.get(timeout=RESULT_TIMEOUT) is None
        assert job_state(db, prefix, first) == "completed"

        sent = time.monotonic()
        acker.tell(Record(done(second, caller.node_id)))
        wait_until(
            lambda: job_state(db, prefix, second) == "completed",
            timeout=RESULT_TIMEOUT,
            message="the acker never wrote the second outcome",
        )
        # A pause left in place would hold this write until RETRY_SECONDS
        # after the failure, about 0.9 s from here.
        assert time.monotonic() - sent < RETRY_SECONDS / 2
    finally:
        acker.stop()


def done(job_id: int, node_id: str) -> AttemptOutcome:
    """Return the outcome of a completed attempt 1 of `job_id`, which has no caller to notify."""
    return AttemptOutcome(job_id=job_id, attempt=1, state="completed", status="ok", node=node_id)


def start_acker(database_dsn: str, prefix: str, instance: Instance) -> pykka.ActorRef[Any]:
    """Start an acker of `instance`'s node outside its supervision, which the test must stop."""
    return AckerActor.start(
        dsn=database_dsn,
        prefix=prefix,
        node_id=instance.node_id,
        insert_channel=f"{prefix}_unused",
    )


def test_outcome_written_by_stopping_acker_not_lost(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outcome that the stopping acker took from its inbox and wrote is not logged as lost."""
    instance = start_instance(queues={SLOW_QUEUE: 1})
    release = tmp_path / "release"
    relay, outcome = running_job_with_outcome(instance, db, prefix, release)
    acker = only_actor(AckerActor)
    instance.unrecorded.add(outcome.job_id, outcome.attempt)
    slot = ActorSlot(StopsAfterTell(acker))  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="relay_actors.acker"):
        send_outcome(slot, outcome, instance.unrecorded, "test sender")

    # The job's own attempt still waits for its file, so only the stopped acker wrote this.
    assert job_state(db, prefix, relay.job.id) == "completed"
    release.write_text("go\n")
    lost = [record for record in caplog.records if getattr(record, "action", "") == "record_lost"]
    assert [record.getMessage() for record in lost] == []


def test_sync_fails_when_acker_gives_up(
    monkeypatch: pytest.MonkeyPatch,
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
) -> None:
    """A Sync waiting for outcomes that the stopping acker gives up on fails at once.

    The job's row stays locked, so every write of its outcome times out,
    including the final one in on_stop. The Sync's caller then gets
    ActorDeadError instead of waiting for its own timeout.
    """
    monkeypatch.setattr(connect, "STATEMENT_TIMEOUT_MS", LOCK_WAIT_MS)
    caller = start_instance(queues={})
    (job_id,) = executing_jobs(db, prefix, caller, 1)
    acker = start_acker(database_dsn, prefix, caller)
    with rows_locked(database_dsn, prefix, [job_id]):
        acker.tell(Record(done(job_id, caller.node_id)))
        synced = acker.ask(Sync(), timeout=RESULT_TIMEOUT)
        acker.stop()

        started = time.monotonic()
        with pytest.raises(pykka.ActorDeadError):
            synced.get(timeout=RESULT_TIMEOUT)
        assert time.monotonic() - started < RESULT_TIMEOUT / 2
    assert job_state(db, prefix, job_id) == "executing"
