"""Helpers for tests that replace actors of a running instance, as a crash would."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pykka

from relay_actors import Instance, Relay
from tests.conftest import job_state, wait_until
from tests.workers import WaitsForCancel

# Seconds for the supervisor, which checks its actors once a second, to restart one.
RESTART_TIMEOUT = 10.0
# Seconds for a running job to start, or to see its cancellation.
JOB_TIMEOUT = 10.0
# Seconds a WaitsForCancel job waits for its cancellation before it gives up.
CANCEL_WAIT_SECONDS = 15


def only_actor(kind: type[pykka.Actor]) -> pykka.ActorRef[Any]:
    """Return the one actor of class `kind` in this process."""
    refs = pykka.ActorRegistry.get_by_class(kind)
    assert len(refs) == 1, f"expected one {kind.__name__} in this process, found {refs}"
    return refs[0]


def wait_for_restart(instance: Instance, role: str) -> None:
    """Wait until the supervisor has restarted the actor of `role` once."""
    wait_until(
        lambda: instance.statistics()["restarts"].get(role) == 1,
        timeout=RESTART_TIMEOUT,
        message=f"the supervisor never restarted the {role}",
    )


def start_cancellable_job(
    instance: Instance, db: psycopg.Connection[Any], prefix: str, marker: Path
) -> Relay[str]:
    """Insert a WaitsForCancel job that creates `marker` once cancelled; wait until it runs."""
    job = WaitsForCancel.new({"seconds": CANCEL_WAIT_SECONDS, "marker": str(marker)})
    relay = Relay.async_(instance.name, job)
    wait_until(
        lambda: job_state(db, prefix, relay.job.id) == "executing",
        timeout=JOB_TIMEOUT,
        message="the job never started",
    )
    return relay


def wait_for_cancellation_seen(marker: Path) -> None:
    """Wait until the running job saw its cancellation flag and wrote `marker`."""
    wait_until(
        marker.exists,
        timeout=RESTART_TIMEOUT,
        message="the running job never saw self.cancelled() turn true",
    )
