"""ProducerActor: claims a queue's jobs for its pool of executors."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import pykka
from pykka import ThreadingFuture

from relay_actors.actors.acker import REPLACEMENT_WAIT_SECONDS, send_outcome
from relay_actors.actors.attempts import RunningAttempts, UnrecordedOutcomes
from relay_actors.actors.audit import ClaimAudit
from relay_actors.actors.executor import ExecutorActor
from relay_actors.actors.executor_pool import ExecutorPool
from relay_actors.actors.inbox import take_queued
from relay_actors.actors.messages import (
    AttemptOutcome,
    CancelRunning,
    CheckCancelled,
    Claim,
    Drain,
    Execute,
    ExecutorIdle,
    Tick,
    Wake,
)
from relay_actors.actors.queue_rows import QueueRows, job_from_row
from relay_actors.actors.ready import ReadyJobs
from relay_actors.actors.slot import ActorSlot
from relay_actors.job import Job

logger = logging.getLogger("relay_actors.producer")

# Most unaccounted jobs that one audit reads.
AUDIT_LIMIT = 1000


class ProducerActor(pykka.ThreadingActor):
    """Claims available jobs of one queue for its pool of executors.

    Wake-ups (inserts, ticks, executors becoming idle) are coalesced: any
    number of them queued together lead to one claim. Claiming runs on this
    actor's thread with a statement timeout, so the inbox never waits forever.
    Between wake-ups the producer polls every `poll_interval` seconds.

    Executors hand their outcomes to the producer, which records them in the
    statement of its next claim: one round trip and one commit for both. A
    claim due only for outcomes takes no jobs while the queue looks empty. If
    that statement fails, the acker records the outcomes and retries them.
    With relaxed claims, a claim that records no outcomes commits on a second
    connection with `synchronous_commit = off`, so that outcomes, and claims
    made in their statement, still wait for the WAL flush.

    While attempts are short, a claim also takes up to one job per executor
    ahead of need, so a freed executor starts its next job without waiting
    for a claim, and claims take many jobs each. An executor that finishes
    an attempt starts the next prefetched job itself, so jobs keep running
    while this actor's thread waits on a statement. Those prefetched jobs are
    returned to the queue, with their attempt not counted, when the producer
    drains or stops. If the node dies, another node's lifeline rescues them
    as lost attempts, which count.

    Every `audit_interval` seconds, the producer reads which of its queue's
    executing jobs on this node it does not account for: jobs whose claim
    committed but whose reply was lost, or that it failed to return. It
    adopts those that two readings in a row find, and runs them (see
    `ClaimAudit`).
    """

    use_daemon_thread = True

    def __init__(
        self,
        *,
        dsn: str,
        prefix: str,
        queue: str,
        executors: int,
        node_id: str,
        acker: ActorSlot,
        poll_interval: float,
        audit_interval: float = 60.0,
        relaxed_claims: bool = False,
        relaxed_outcomes: bool = False,
        secret: bytes | None = None,
        attempts: RunningAttempts | None = None,
        unrecorded: UnrecordedOutcomes | None = None,
    ) -> None:
        super().__init__()
        # Shared with earlier producers of this queue, whose executors may
        # still run attempts that a cancellation must reach.
        self._attempts = RunningAttempts() if attempts is None else attempts
        # Shared with the acker, which discards the outcomes it writes.
        self._unrecorded = UnrecordedOutcomes() if unrecorded is None else unrecorded
        self._prefix = prefix
        self._queue = queue
        self._pool = ExecutorPool(executors)
        self._node_id = node_id
        self._acker = acker
        self._poll_interval = poll_interval
        self._audit = ClaimAudit(audit_interval)
        self._rows = QueueRows(
            dsn=dsn,
            prefix=prefix,
            queue=queue,
            node_id=node_id,
            relaxed_claims=relaxed_claims,
            relaxed_outcomes=relaxed_outcomes,
            secret=secret,
        )
        self._outcomes: list[AttemptOutcome] = []
        self._ready = ReadyJobs(self._attempts)
        self._want_claim = True
        self._claim_queued = False
        self._next_poll = 0.0
        self._draining = False
        self._drained: list[ThreadingFuture[None]] = []
        self.claimed = 0
        self.recorded = 0
        self.adopted = 0

    def on_start(self) -> None:
        for _ in range(self._pool.size):
            executor = ExecutorActor.start(
                self.actor_ref,
                self._acker,
                self._prefix,
                self._node_id,
                self._attempts,
                self._unrecorded,
                self._ready,
            )
            self._pool.add(executor)
        self._queue_claim()
        # After a restart, the old producer's executors may still run attempts
        # whose cancellation notifications reached no producer meanwhile.
        if len(self._attempts):
            self.actor_ref.tell(CheckCancelled())

    def on_stop(self) -> None:
        # No executor starts a prefetched job from now on. A producer that
        # stops without a drain (a supervisor restart) still returns them,
        # because the next producer does not track them.
        prefetched = self._ready.take_all(close=True)
        # An executor still running a job (past the shutdown grace period)
        # stops after its job returns.
        self._pool.stop()
        self._return_ready(prefetched)
        self._take_queued_outcomes()
        self._hand_to_acker()
        self._rows.close()

    def on_failure(self, *exc_info: Any) -> None:
        prefetched = self._ready.take_all(close=True)
        self._pool.stop(timeout=None)
        self._return_ready(prefetched)
        self._take_queued_outcomes()
        self._hand_to_acker()
        self._rows.close()

    def _take_queued_outcomes(self) -> None:
        """Keep the outcomes that executors sent after this producer's last message."""
        for idle in take_queued(self, ExecutorIdle):
            self._outcomes.append(idle.outcome)

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Wake):
            self._want_claim = True
            self._queue_claim()
        elif isinstance(message, Tick):
            # Waiting jobs left to busy executors start on an idle one once
            # those executors stall on a long attempt.
            self._dispatch()
            now = time.monotonic()
            if now >= self._next_poll:
                self._want_claim = True
                self._queue_claim()
            if self._audit.due(now) and not self._draining:
                self._adopt_unaccounted(now)
        elif isinstance(message, Claim):
            self._claim_queued = False
            self._claim()
        elif isinstance(message, ExecutorIdle):
            self._on_idle(message)
        elif isinstance(message, CancelRunning):
            self._cancel({message.job_id})
        elif isinstance(message, CheckCancelled):
            self._check_cancelled()
        elif isinstance(message, Drain):
            self._draining = True
            self._return_ready(self._ready.take_all())
            future: ThreadingFuture[None] = ThreadingFuture()
            self._drained.append(future)
            self._settle_drain()
            return future
        else:
            logger.warning(
                "producer %s dropped an unknown message %r",
                self._queue,
                type(message),
                extra={"action": "unknown_message", "queue": self._queue},
            )
        return None

    def statistics(self) -> dict[str, int]:
        return {
            "executors": self._pool.size,
            "busy": self._pool.busy,
            "prefetched": len(self._ready),
            "claimed": self.claimed,
            "recorded": self.recorded,
            "adopted": self.adopted,
        }

    def _on_idle(self, idle: ExecutorIdle) -> None:
        self._outcomes.append(idle.outcome)
        self._pool.count_attempt(idle.seconds)
        if idle.busy:
            self._pool.began_next(idle.executor)
        else:
            self._pool.give_back(idle.executor)
        self._dispatch()
        self._queue_claim()
        self._settle_drain()

    def _cancel(self, job_ids: set[int]) -> None:
        # A cancelled job that waits for an executor is already cancelled on
        # its row, so it is dropped without running. Dropped first: a job
        # that an executor starts meanwhile is among the attempts below.
        self._ready.drop(job_ids)
        for job_id in job_ids:
            self._attempts.cancel(job_id)

    def _check_cancelled(self) -> None:
        """Cancel the running and prefetched jobs whose rows were cancelled."""
        # Waiting jobs first: one that starts between the two readings is in both.
        ids = self._ready.job_ids() + self._attempts.job_ids()
        if not ids:
            return
        try:
            cancelled = self._rows.cancelled_among(ids)
        except psycopg.Error as error:
            logger.warning(
                "checking %d jobs of queue %s for cancellations failed, so a job cancelled "
                "without a notification to this producer runs on: %s",
                len(ids),
                self._queue,
                error,
                extra={"action": "cancel_check_failed", "queue": self._queue},
            )
            self._rows.close()
            return
        if cancelled:
            logger.info(
                "jobs %s of queue %s were cancelled without a notification to this producer; "
                "their cancellation flags are set now",
                sorted(cancelled),
                self._queue,
                extra={"action": "cancel_missed", "queue": self._queue},
            )
            self._cancel(cancelled)

    def _adopt_unaccounted(self, now: float) -> None:
        """Read this node's executing jobs of the queue that no attempt accounts for; adopt some."""
        # In the order a job moves through them, so that a job moving on
        # between two readings is in at least one.
        known = self._ready.job_ids() + self._attempts.job_ids() + self._unrecorded.job_ids()
        try:
            rows = self._rows.unaccounted(known, AUDIT_LIMIT)
        except psycopg.Error as error:
            self._audit.fail(now)
            logger.warning(
                "reading the unaccounted jobs of queue %s failed, retrying in one audit period: %s",
                self._queue,
                error,
                extra={"action": "audit_failed", "queue": self._queue},
            )
            self._rows.close()
            return
        adopted = self._audit.confirm(rows, now)
        if not adopted:
            return
        jobs = [job_from_row(row) for row in adopted]
        logger.warning(
            "jobs %s of queue %s were claimed by this node but no executor ran them: a claim's "
            "reply was lost or returning prefetched jobs failed; they run now",
            [job.id for job in jobs],
            self._queue,
            extra={"action": "jobs_adopted", "queue": self._queue},
        )
        self.adopted += len(jobs)
        self._ready.extend(jobs)
        self._dispatch()

    def _queue_claim(self) -> None:
        """Claim, or record outcomes, now if no other message waits; else after those queued.

        A message queued behind others lets them coalesce into one statement:
        wake-ups, and outcomes from several executors. With none waiting, the
        producer claims at once, which saves a trip through its own inbox.
        """
        if self._claim_queued:
            return
        if self._outcomes or (self._want_claim and not self._draining and self._claim_room()):
            if self.actor_inbox.empty():
                self._claim()
                return
            self._claim_queued = True
            self.actor_ref.tell(Claim())

    def _claim_room(self) -> bool:
        """Return True if executors wait for jobs, or the prefetched jobs run low."""
        if self._pool.idle > len(self._ready):
            return True
        prefetch = self._pool.prefetch_limit()
        return prefetch > 0 and len(self._ready) <= prefetch // 2

    def _dispatch(self) -> None:
        """Start waiting jobs on idle executors, oldest claim first, as far as they need.

        Busy executors start waiting jobs themselves when their attempt
        ends, so an idle one is woken only when they would take too long.
        """
        while self._pool.should_wake(len(self._ready)):
            started = self._ready.start_next()
            if started is None:
                return
            job, cancellation = started
            self._pool.take().tell(Execute(job, cancellation))

    def _return_ready(self, jobs: list[Job]) -> None:
        """Give prefetched jobs back to the queue, as if they had never been claimed."""
        if not jobs:
            return
        try:
            self._rows.unclaim(jobs)
        except psycopg.Error as error:
            logger.warning(
                "returning %d prefetched jobs of queue %s failed; a later producer of this "
                "node adopts them, or another node rescues them as lost attempts if this "
                "node stops: %s",
                len(jobs),
                self._queue,
                error,
                extra={"action": "unclaim_failed", "queue": self._queue},
            )
            self._rows.close()

    def _settle_drain(self) -> None:
        if self._draining and not self._pool.busy and not self._outcomes:
            for future in self._drained:
                future.set(None)
            self._drained.clear()

    def _claim(self) -> None:
        limit = 0
        if self._want_claim and not self._draining:
            limit = max(0, self._pool.idle + self._pool.prefetch_limit() - len(self._ready))
        if limit == 0 and not self._outcomes:
            return
        outcomes, self._outcomes = self._outcomes, []
        self._next_poll = time.monotonic() + self._poll_interval
        try:
            rows = self._rows.write_and_claim(outcomes, limit)
        except Exception as error:  # noqa: BLE001 - the acker retries or isolates the outcomes
            logger.warning(
                "claim on queue %s failed, retrying on the next poll: %s",
                self._queue,
                error,
                extra={"action": "claim_failed", "queue": self._queue},
            )
            self._rows.close()
            self._outcomes = outcomes + self._outcomes
            self._hand_to_acker(keep_unsent=True)
            self._settle_drain()
            return
        self._unrecorded.discard([(outcome.job_id, outcome.attempt) for outcome in outcomes])
        self.recorded += len(outcomes)
        if limit:
            # A full batch suggests more jobs wait; claim again once executors free up.
            self._want_claim = len(rows) == limit
            self.claimed += len(rows)
            self._ready.extend(job_from_row(row) for row in rows)
            self._dispatch()
        self._settle_drain()

    def _hand_to_acker(self, *, keep_unsent: bool = False) -> None:
        """Send the outcomes not yet recorded to the acker, which records and retries them.

        With `keep_unsent`, outcomes that no acker took, for example while
        the supervisor replaces a crashed one, stay for this producer's next
        claim. Else the first of them waits for a replacement acker, and
        those that none takes are given up, and their jobs run again.
        """
        outcomes, self._outcomes = self._outcomes, []
        sender = f"producer {self._queue}"
        # Only the first outcome that no acker takes waits for a replacement.
        wait = REPLACEMENT_WAIT_SECONDS
        for outcome in outcomes:
            sent = send_outcome(
                self._acker, outcome, self._unrecorded, sender, give_up=not keep_unsent, wait=wait
            )
            if not sent:
                wait = 0.0
                if keep_unsent:
                    self._outcomes.append(outcome)
