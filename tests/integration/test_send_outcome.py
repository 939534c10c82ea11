"""`send_outcome`: handing an outcome to an acker that stopped while it was sent."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest

from relay_actors import Instance, Ok, Relay
from relay_actors.actors.acker import REPLACEMENT_WAIT_SECONDS, AckerActor, send_outcome
from relay_actors.actors.attempts import UnrecordedOutcomes
from relay_actors.actors.messages import AttemptOutcome
from relay_actors.actors.outcomes import from_return
from relay_actors.actors.slot import ActorSlot
from tests.conftest import job_state, wait_until
from tests.integration.test_fault_adoption import logged
from tests.integration.test_restart_outcomes import start_waiting_job
from tests.restarts import only_actor, wait_for_restart
from tests.workers import SLOW_QUEUE

RESULT_TIMEOUT = 10.0


class SwappedSlot(ActorSlot):
    """A slot that returns `first` once, then the instance's slot: a replacement seen late."""

    def __init__(self, first: pykka.ActorRef[Any], later: ActorSlot) -> None:
        super().__init__(first)
        self._later = later
        self._reads = 0

    @property  # type: ignore[misc]
    def ref(self) -> pykka.ActorRef[Any] | None:
        self._reads += 1
        if self._reads == 1:
            return super().ref
        return self._later.ref


def running_job_with_outcome(
    instance: Instance, db: psycopg.Connection[Any], prefix: str, release: Path
) -> tuple[Relay[str], AttemptOutcome]:
    """Start a job that runs until `release` exists; return it and an outcome "sent late" of it.

    The job's own attempt cannot end before the test creates `release`, so
    only the outcome that the test sends can complete the row until then.
    """
    relay = start_waiting_job(instance, db, prefix, release)
    job = dataclasses.replace(relay.job, attempt=1)
    return relay, from_return(job, "sent late", prefix, instance.node_id)


def outcome_after_acker_restart(
    instance: Instance, db: psycopg.Connection[Any], prefix: str, release: Path
) -> tuple[Relay[str], AttemptOutcome, pykka.ActorRef[Any]]:
    """Return a running job, an outcome of it and the acker, stopped and already replaced.

    The outcome is listed in the node-wide unrecorded set, from which the
    acker that writes it removes it.
    """
    relay, outcome = running_job_with_outcome(instance, db, prefix, release)
    stopped = only_actor(AckerActor)
    stopped.stop()
    wait_for_restart(instance, "acker")
    instance.unrecorded.add(outcome.job_id, outcome.attempt)
    return relay, outcome, stopped


def test_outcome_given_up_without_live_acker(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outcome sent to an acker stopped with its node leaves the unrecorded set at once.

    A closed slot, as the node's stop leaves it, ends the wait for a
    replacement acker.
    """
    instance = start_instance(queues={SLOW_QUEUE: 1})
    release = tmp_path / "release"
    _, outcome = running_job_with_outcome(instance, db, prefix, release)
    acker = only_actor(AckerActor)
    acker.stop()
    slot = ActorSlot(acker)
    slot.close()
    unrecorded = UnrecordedOutcomes()
    unrecorded.add(outcome.job_id, outcome.attempt)

    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="relay_actors.acker"):
        sent = send_outcome(slot, outcome, unrecorded, "test sender")

    assert not sent
    assert time.monotonic() - started < REPLACEMENT_WAIT_SECONDS
    assert unrecorded.job_ids() == []
    lost = [record for record in caplog.records if getattr(record, "action", "") == "record_lost"]
    assert len(lost) == 1
    assert "test sender" in lost[0].getMessage()
    release.write_text("go\n")


def test_outcome_goes_to_replacement_acker(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    """An outcome whose acker stopped goes to the acker that the supervisor started."""
    instance = start_instance(queues={SLOW_QUEUE: 1})
    release = tmp_path / "release"
    relay, outcome, stopped = outcome_after_acker_restart(instance, db, prefix, release)
    unrecorded = instance.unrecorded

    send_outcome(SwappedSlot(stopped, instance.acker), outcome, unrecorded, "test sender")

    # The attempt itself still runs, so only the replacement can have recorded it.
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("sent late")
    assert job_state(db, prefix, relay.job.id) == "completed"
    wait_until(
        lambda: unrecorded.job_ids() == [],
        timeout=RESULT_TIMEOUT,
        message="the replacement acker never removed the outcome it wrote",
    )
    release.write_text("go\n")


def test_outcome_waits_for_replacement_acker(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An outcome sent while no acker runs goes to the one that fills the slot soon after.

    The slot contains only the stopped acker until a timer puts the
    instance's replacement in it, as the supervisor does within a second.
    """
    instance = start_instance(queues={SLOW_QUEUE: 1})
    release = tmp_path / "release"
    relay, outcome, stopped = outcome_after_acker_restart(instance, db, prefix, release)
    slot = ActorSlot(stopped)
    replace = threading.Timer(0.2, lambda: setattr(slot, "ref", instance.acker.ref))
    replace.start()

    with caplog.at_level(logging.ERROR, logger="relay_actors.acker"):
        sent = send_outcome(slot, outcome, instance.unrecorded, "test sender")
    replace.join()

    assert sent
    # The attempt itself still runs, so only the replacement can have recorded it.
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("sent late")
    assert logged(caplog, "relay_actors.acker", "record_lost") == 0
    release.write_text("go\n")
