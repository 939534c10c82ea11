"""Acker hand-over and retry pause: the cases that review of the acker changes found."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest

from relay_actors import Instance, Relay
from relay_actors.actors.acker import AckerActor, send_outcome
from relay_actors.actors.inbox import ClosableInbox, take_queued
from relay_actors.actors.messages import AttemptOutcome, Flush, Record, Sync, Tick
from relay_actors.actors.outcomes import from_return
from relay_actors.actors.slot import ActorSlot
from tests.conftest import job_state, wait_until
from tests.restarts import only_actor
from tests.workers import SLOW_QUEUE, WaitsForFile

RESULT_TIMEOUT = 10.0
# Seconds a WaitsForFile job waits for its file before it gives up.
JOB_SECONDS = 60


class StopsAfterTell:
    """An acker ref that stops its actor after queueing a message, before the sender checks it.

    This is the interleaving where the acker stops between the sender's
    `tell` and its `is_alive` check, so the acker's `on_stop` takes the
    queued outcome and writes it.
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
    acker = AckerActor(dsn="", prefix="relay_review", node_id="node", insert_channel="inserts")
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


def test_acker_writes_after_successful_sync() -> None:
    """A Record that arrives after a Sync wrote the batch is written at its Flush.

    The write before the Sync failed, which paused writes for RETRY_SECONDS.
    The Sync then wrote the batch, so nothing is left to retry.
    """
    acker = AckerActor(dsn="", prefix="relay_review", node_id="node", insert_channel="inserts")
    written: list[list[int]] = []
    failures = [psycopg.OperationalError("canceling statement due to lock timeout")]

    def write(outcomes: list[AttemptOutcome]) -> None:
        if failures:
            raise failures.pop()
        written.append([outcome.job_id for outcome in outcomes])

    acker._write = write  # type: ignore[method-assign]
    first = AttemptOutcome(job_id=1, attempt=1, state="completed", status="ok")
    second = AttemptOutcome(job_id=2, attempt=1, state="completed", status="ok")

    acker.on_receive(Record(first))
    acker.on_receive(Flush())
    assert written == []
    synced = acker.on_receive(Sync())
    assert synced.get(timeout=0) is None
    assert written == [[1]]
    acker.on_receive(Record(second))
    acker.on_receive(Flush())

    assert written == [[1], [2]]


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
    relay = Relay.async_(
        instance.name, WaitsForFile.new({"path": str(release), "seconds": JOB_SECONDS})
    )
    wait_until(
        lambda: job_state(db, prefix, relay.job.id) == "executing",
        timeout=RESULT_TIMEOUT,
        message="the job never started",
    )
    job = dataclasses.replace(relay.job, attempt=1)
    outcome = from_return(job, "sent late", prefix, instance.node_id)
    acker = only_actor(AckerActor)
    instance.unrecorded.add(outcome.job_id, outcome.attempt)
    slot = ActorSlot(StopsAfterTell(acker))  # type: ignore[arg-type]

    with caplog.at_level(logging.ERROR, logger="relay_actors.acker"):
        send_outcome(slot, outcome, instance.unrecorded, "review sender")

    # The job's own attempt still waits for its file, so only the stopped acker wrote this.
    assert job_state(db, prefix, relay.job.id) == "completed"
    release.write_text("go\n")
    lost = [record for record in caplog.records if getattr(record, "action", "") == "record_lost"]
    assert [record.getMessage() for record in lost] == []
