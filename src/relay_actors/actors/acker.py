"""AckerActor: writes attempt outcomes in batches and announces relay results."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import pykka
from pykka import ThreadingFuture

from relay_actors.actors.attempts import UnrecordedOutcomes
from relay_actors.actors.inbox import ClosableInbox, take_queued
from relay_actors.actors.messages import AttemptOutcome, Flush, Record, Sync, Tick
from relay_actors.actors.outcomes import failed_attempt
from relay_actors.actors.recording import OutcomeWriter
from relay_actors.actors.slot import ActorSlot
from relay_actors.backoff import default_backoff
from relay_actors.failures import RecordFailed
from relay_actors.store.connect import connect
from relay_actors.store.statements import statements_for

logger = logging.getLogger("relay_actors.acker")

MAX_BATCH = 500
# Seconds after a failed write before the acker writes again, unless a Sync
# requests it. Ticks that queue up during a long failed write then cost
# nothing, instead of one more failed write each.
RETRY_SECONDS = 1.0
RECORD_FAILED_TYPE = f"{RecordFailed.__module__}.{RecordFailed.__qualname__}"
# Seconds that `send_outcome` waits for the supervisor to replace a stopped
# acker before it gives an outcome up. The supervisor checks once a second.
REPLACEMENT_WAIT_SECONDS = 2.0


def send_outcome(
    acker: ActorSlot,
    outcome: AttemptOutcome,
    unrecorded: UnrecordedOutcomes,
    sender: str,
    *,
    give_up: bool = True,
    wait: float = REPLACEMENT_WAIT_SECONDS,
) -> bool:
    """Send `outcome` to the acker; return False if no acker took it.

    The acker's inbox rejects a `Record` once its `on_stop` or `on_failure`
    has taken the queued ones, so a `Record` that `tell` accepted is written
    or given up by that acker. A rejected one goes to the acker that the
    supervisor started in its place. A sender that can keep the outcome and
    write it later passes `give_up` False, and gets False back at once if
    no live acker took it. With `give_up` True, the sender waits up to
    `wait` seconds for the supervisor to start a replacement, unless the
    acker was stopped with its node. If none comes, the outcome leaves
    `unrecorded`, so that the producer's audit adopts the still executing
    job, and the logged error names `sender`.
    """
    tried: list[pykka.ActorRef[Any]] = []
    deadline = time.monotonic() + wait
    while True:
        ref = acker.ref
        if ref is None or ref in tried:
            if not give_up:
                return False
            ref = acker.wait_for_other(tried, max(0.0, deadline - time.monotonic()))
            if ref is None:
                break
        tried.append(ref)
        try:
            ref.tell(Record(outcome))
        except pykka.ActorDeadError:
            continue
        return True
    unrecorded.discard([(outcome.job_id, outcome.attempt)])
    logger.error(
        "%s could not hand the outcome of job %s attempt %s to the acker, which stopped, so it "
        "is not recorded; the job runs again once a producer's audit adopts it, or once "
        "another node rescues it if this node stops",
        sender,
        outcome.job_id,
        outcome.attempt,
        extra={"action": "record_lost", "job_id": outcome.job_id},
    )
    return False


class AckerActor(pykka.ThreadingActor):
    """Records outcomes of finished attempts, many per transaction.

    Outcomes that queue up while a batch is written share the next commit, so
    under load several jobs share one WAL flush and one NOTIFY per caller
    node. The row update and the notifications commit in one transaction, so a
    result is announced only if it was recorded. A failed write keeps the
    batch and retries on the first tick `RETRY_SECONDS` later. A stopping
    acker writes once more, then gives up what is left.
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> ClosableInbox:
        return ClosableInbox()

    def __init__(
        self,
        *,
        dsn: str,
        prefix: str,
        node_id: str,
        insert_channel: str,
        secret: bytes | None = None,
        unrecorded: UnrecordedOutcomes | None = None,
    ) -> None:
        super().__init__()
        self._unrecorded = UnrecordedOutcomes() if unrecorded is None else unrecorded
        self._dsn = dsn
        self._node_id = node_id
        self._writer = OutcomeWriter(statements_for(prefix), insert_channel, secret)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._batch: list[AttemptOutcome] = []
        self._flush_queued = False
        self._retry_at = 0.0
        self._syncs: list[ThreadingFuture[None]] = []
        self.recorded = 0

    def on_stop(self) -> None:
        self._batch.extend(record.outcome for record in take_queued(self, Record))
        if self._batch:
            self._flush()
        if self._batch:
            logger.error(
                "%d job outcomes not recorded at stop; those jobs run again once a producer's "
                "audit adopts them, or once another node rescues them if this node stops",
                len(self._batch),
                extra={"action": "record_lost"},
            )
            self._give_up()
        self._close()

    def on_failure(self, *exc_info: Any) -> None:
        self._batch.extend(record.outcome for record in take_queued(self, Record))
        if self._batch:
            try:
                self._flush()
            except Exception:
                logger.exception(
                    "acker could not write its outcomes after it failed",
                    extra={"action": "record_failed"},
                )
        if self._batch:
            logger.error(
                "acker failed with %d outcomes not recorded; those jobs run again once a "
                "producer's audit adopts them, or once another node rescues them if this node "
                "stops",
                len(self._batch),
                extra={"action": "record_lost"},
            )
            self._give_up()
        self._close()

    def _give_up(self) -> None:
        """Drop the outcomes left in the batch, so that a producer's audit may adopt their jobs.

        Callers waiting on a Sync get ActorDeadError, because this acker will
        never write those outcomes.
        """
        self._unrecorded.discard([(outcome.job_id, outcome.attempt) for outcome in self._batch])
        error = pykka.ActorDeadError(
            f"the acker stopped with {len(self._batch)} outcomes not recorded"
        )
        for future in self._syncs:
            future.set_exception(exc_info=(type(error), error, None))
        self._syncs.clear()
        self._batch.clear()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Record):
            self._batch.append(message.outcome)
            if not self._flush_queued:
                self._flush_queued = True
                self.actor_ref.tell(Flush())
        elif isinstance(message, Flush):
            self._flush_queued = False
            if time.monotonic() >= self._retry_at:
                self._flush()
        elif isinstance(message, Tick):
            if self._batch and time.monotonic() >= self._retry_at:
                self._flush()
        elif isinstance(message, Sync):
            future: ThreadingFuture[None] = ThreadingFuture()
            if self._batch:
                self._flush()
            if self._batch:
                self._syncs.append(future)
            else:
                future.set(None)
            return future
        else:
            logger.warning(
                "acker dropped an unknown message %r",
                type(message),
                extra={"action": "unknown_message"},
            )
        return None

    def statistics(self) -> dict[str, int]:
        return {"recorded": self.recorded, "waiting": len(self._batch)}

    def _flush(self) -> None:
        while self._batch:
            batch = self._batch[:MAX_BATCH]
            try:
                self._write(batch)
            except (psycopg.OperationalError, psycopg.InterfaceError) as error:
                logger.warning(
                    "recording %d job outcomes failed, retrying in %.0f s: %s",
                    len(batch),
                    RETRY_SECONDS,
                    error,
                    extra={"action": "record_failed"},
                )
                self._retry_later()
                return
            except Exception as error:  # noqa: BLE001 - one bad outcome must not block others
                # Not a connection problem, so retrying the same batch would
                # fail again: find the outcomes at fault one by one.
                logger.error(
                    "recording a batch of outcomes failed: %s",
                    error,
                    extra={"action": "record_batch_failed"},
                )
                try:
                    self._write_one_by_one(batch)
                except (psycopg.OperationalError, psycopg.InterfaceError) as lost:
                    logger.warning(
                        "recording outcomes failed, retrying in %.0f s: %s",
                        RETRY_SECONDS,
                        lost,
                        extra={"action": "record_failed"},
                    )
                    self._retry_later()
                    return
            del self._batch[: len(batch)]
            self._unrecorded.discard([(outcome.job_id, outcome.attempt) for outcome in batch])
            self.recorded += len(batch)
        # Every outcome is written, so a pause left by an earlier failure
        # would only hold back the Flush of the next outcome.
        self._retry_at = 0.0
        for future in self._syncs:
            future.set(None)
        self._syncs.clear()

    def _retry_later(self) -> None:
        """Close the connection, which may be broken, and pause writes for `RETRY_SECONDS`."""
        self._close()
        self._retry_at = time.monotonic() + RETRY_SECONDS

    def _write_one_by_one(self, batch: list[AttemptOutcome]) -> None:
        """Write each outcome alone; one that still fails is replaced by a failed attempt."""
        for outcome in batch:
            try:
                self._write([outcome])
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError):
                raise
            except Exception as error:  # noqa: BLE001 - replaced by a failed attempt below
                # The failed attempt counts, so a job whose outcomes can never
                # be written is discarded at its last attempt. An outcome that
                # carries no limit leaves its job retryable. The retry waits
                # like any failed attempt's, so such a job does not run its
                # attempts back to back.
                max_attempts = outcome.max_attempts
                if max_attempts is None:
                    max_attempts = outcome.attempt + 1
                fallback = failed_attempt(
                    job_id=outcome.job_id,
                    queue=outcome.queue,
                    attempt=outcome.attempt,
                    max_attempts=max_attempts,
                    error_type=RECORD_FAILED_TYPE,
                    message=f"the outcome {outcome.status!r} could not be recorded: {error}",
                    trace="",
                    node_id=outcome.node or self._node_id,
                    relay=outcome.relay,
                    delay=fallback_delay(outcome),
                )
            try:
                self._write([fallback])
            except (psycopg.OperationalError, psycopg.InterfaceError):
                # For example a lock timeout: the batch is retried later.
                raise
            except Exception as error:  # noqa: BLE001 - logged, nothing else can be done
                logger.error(
                    "outcome of job %s attempt %s is lost: %s",
                    outcome.job_id,
                    outcome.attempt,
                    error,
                    extra={"action": "record_lost", "job_id": outcome.job_id},
                )

    def _write(self, outcomes: list[AttemptOutcome]) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, "acker", self._node_id)
        self._writer.write(self._conn, outcomes)


def fallback_delay(outcome: AttemptOutcome) -> float:
    """Return the delay before the retry of the failed attempt that replaces `outcome`.

    An attempt that failed keeps its worker's backoff, bounded when the
    outcome was made. Every other outcome, a rescued or released attempt's
    included, gets the default backoff, so that a job whose outcomes cannot
    be written does not run its attempts back to back.
    """
    if outcome.state == "retryable":
        return outcome.delay
    return default_backoff(outcome.attempt)
