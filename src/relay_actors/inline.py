"""Inline testing mode: `start(testing="inline")` runs each job in the thread that inserts it.

An inline instance has no database, no listener and no worker node. Its
`Relay.async_` validates a job as usual, then runs one attempt of `perform`
at once on the caller's thread. The outcome comes from the same code an
executor uses (codec, size limit, markers, error capture). It goes into the
caller's mailbox, so `Relay.await_` returns it without waiting.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar

from relay_actors.actors.executor import run_attempt
from relay_actors.actors.messages import AttemptOutcome, Deliver
from relay_actors.errors import ConfigurationError
from relay_actors.inserting import InsertCombiner, Row
from relay_actors.instance import Instance
from relay_actors.job import Job
from relay_actors.options import Options
from relay_actors.store.connect import ConnectionPool
from relay_actors.wire import Delivery, Entry

INLINE = "inline"
# The schema name an inline instance reports, although it never touches a database.
INLINE_PREFIX = "public"


class _NoDatabasePool(ConnectionPool):
    """Pool of an inline instance, which raises on every request for a connection."""

    def __init__(self, instance_name: str, node_id: str) -> None:
        super().__init__("", node_id, max_size=1)
        self._instance_name = instance_name

    def _acquire(self, timeout: float) -> Any:
        raise ConfigurationError(
            f"instance {self._instance_name!r} runs in inline testing mode and has no "
            "database; start it without testing='inline' to use this call"
        )


class _InlineRunner(InsertCombiner):
    """Runs each job at once instead of inserting it, and delivers its result.

    Job ids count up from 1 per instance. A job runs even if it is scheduled
    for later, and it gets exactly one attempt.
    """

    def __init__(self, instance: InlineInstance) -> None:
        super().__init__(instance.pool, instance.statements, instance.insert_channel)
        self._instance = instance
        self._ids = itertools.count(1)
        self._id_lock = threading.Lock()

    def insert(self, jobs: list[Job[Any]], metas: list[dict[str, Any]]) -> list[Row]:
        """Run each job in order on this thread; return (id, state, inserted_at, scheduled_at)."""
        rows: list[Row] = []
        for job, meta in zip(jobs, metas, strict=True):
            with self._id_lock:
                job_id = next(self._ids)
            now = datetime.now(UTC)
            running = dataclasses.replace(
                job,
                id=job_id,
                state="executing",
                attempt=1,
                meta=meta,
                inserted_at=now,
                scheduled_at=job.scheduled_at or now,
                attempted_at=now,
                attempted_by=self._instance.node_id,
            )
            outcome = run_attempt(
                running, threading.Event(), self._instance.prefix, self._instance.node_id
            )
            self._deliver(outcome)
            rows.append((job_id, outcome.state, now, running.scheduled_at))
        return rows

    def _deliver(self, outcome: AttemptOutcome) -> None:
        relay = outcome.relay
        if relay is None:
            return
        # Inline mode makes no second attempt, so every outcome is final: an
        # await with with_retries=True returns it instead of waiting for retries.
        delivery = Delivery(outcome.job_id, outcome.status, outcome.attempt, True, outcome.result)
        self._instance.keep(delivery)
        mailbox = self._instance.directory.route(relay.mailbox, relay.ref)
        if mailbox is not None:
            mailbox.tell(Deliver((Entry(relay.mailbox, relay.ref, delivery),)))


class InlineInstance(Instance):
    """An instance whose `Relay.async_` runs jobs on the caller's thread. Made by `start()`.

    It opens no connection. `Relay.async_(job, conn=...)` ignores `conn` and
    runs the job at once, as if the caller's transaction had committed.
    """

    inline: ClassVar[bool] = True

    def __init__(
        self, *, name: str, node: str, options: Options, on_stop: Callable[[Instance], None]
    ) -> None:
        super().__init__(
            name=name, dsn="", prefix=INLINE_PREFIX, node=node, options=options, on_stop=on_stop
        )
        self.pool = _NoDatabasePool(name, self.node_id)
        self.inserter = _InlineRunner(self)
        # What a real instance would read from the rows, for awaits that find
        # no result in their mailbox (a thread that ended, a full cache).
        # NOTE: it keeps every relay job's outcome until the instance stops.
        self._deliveries: dict[int, Delivery] = {}
        self._deliveries_lock = threading.Lock()

    def keep(self, delivery: Delivery) -> None:
        """Store a job's final outcome, as a real instance stores it on the job's row."""
        with self._deliveries_lock:
            self._deliveries[delivery.job_id] = delivery

    def read_deliveries(self, job_ids: list[int], timeout: float) -> dict[int, Delivery | None]:
        """Return the stored outcome of each job that ran on this instance."""
        with self._deliveries_lock:
            return {
                job_id: self._deliveries[job_id] for job_id in job_ids if job_id in self._deliveries
            }

    def start_actors(self) -> None:
        """Start nothing: an inline instance has no actors besides callers' mailboxes."""

    def stop(self, grace: float | None = None) -> None:
        """Stop the callers' mailboxes; calling stop twice is harmless."""
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        for mailbox in self.directory.mailboxes():
            mailbox.stop()
        self._on_stop(self)

    def cancel_job(self, job_id: int, reason: str = "") -> bool:
        """Return False: every job of an inline instance finished when it was inserted."""
        self.check_usable(relay=False)
        return False


def validate_testing(testing: object) -> str | None:
    """Return the testing mode, or raise ConfigurationError naming the valid ones."""
    if testing is None:
        return None
    if testing == INLINE:
        return INLINE
    raise ConfigurationError(
        f"invalid testing mode {testing!r}: give testing='inline' to run jobs in the "
        "inserting thread, or leave it out"
    )
