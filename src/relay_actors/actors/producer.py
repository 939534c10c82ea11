"""ProducerActor: claims a queue's jobs for its pool of executors."""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

import psycopg
import pykka
from pykka import ThreadingFuture

from relay_actors.actors.executor import ExecutorActor
from relay_actors.actors.messages import (
    CancelRunning,
    Claim,
    Drain,
    Execute,
    ExecutorIdle,
    Release,
    Tick,
    Wake,
)
from relay_actors.actors.slot import ActorSlot
from relay_actors.job import Job
from relay_actors.store.connect import connect, is_pooled
from relay_actors.store.statements import statements_for

logger = logging.getLogger("relay_actors.producer")

EXECUTOR_STOP_SECONDS = 1.0


class ProducerActor(pykka.ThreadingActor):
    """Claims available jobs of one queue, up to the number of idle executors.

    Wake-ups (inserts, ticks, executors becoming idle) are coalesced: any
    number of them queued together lead to one claim. Claiming runs on this
    actor's thread with a statement timeout, so the inbox never waits forever.
    Between wake-ups the producer polls every `poll_interval` seconds.
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
        relaxed_claims: bool = False,
    ) -> None:
        super().__init__()
        self._relaxed_claims = relaxed_claims
        self._dsn = dsn
        self._prefix = prefix
        self._queue = queue
        self._size = executors
        self._node_id = node_id
        self._acker = acker
        self._poll_interval = poll_interval
        self._statements = statements_for(prefix)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._executors: list[pykka.ActorRef[Any]] = []
        self._idle: deque[pykka.ActorRef[Any]] = deque()
        self._running: dict[str, tuple[Job, threading.Event]] = {}
        self._want_claim = True
        self._claim_queued = False
        self._next_poll = 0.0
        self._draining = False
        self._drained: list[ThreadingFuture[None]] = []
        self.claimed = 0

    def on_start(self) -> None:
        for _ in range(self._size):
            executor = ExecutorActor.start(self.actor_ref, self._acker, self._prefix, self._node_id)
            self._executors.append(executor)
            self._idle.append(executor)
        self._queue_claim()

    def on_stop(self) -> None:
        # Idle executors stop at once; one still running a job (past the
        # shutdown grace period) stops after its job returns.
        for executor in self._executors:
            executor.stop(block=False)
        deadline = time.monotonic() + EXECUTOR_STOP_SECONDS
        for executor in self._executors:
            executor.actor_stopped.wait(max(0.0, deadline - time.monotonic()))
        self._close()

    def on_failure(self, *exc_info: Any) -> None:
        for executor in self._executors:
            executor.stop(block=False)
        self._close()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Wake):
            self._want_claim = True
            self._queue_claim()
        elif isinstance(message, Tick):
            if time.monotonic() >= self._next_poll:
                self._want_claim = True
                self._queue_claim()
        elif isinstance(message, Claim):
            self._claim_queued = False
            self._claim()
        elif isinstance(message, ExecutorIdle):
            self._on_idle(message.executor)
        elif isinstance(message, CancelRunning):
            for job, cancellation in self._running.values():
                if job.id == message.job_id:
                    cancellation.set()
        elif isinstance(message, Drain):
            self._draining = True
            future: ThreadingFuture[None] = ThreadingFuture()
            self._drained.append(future)
            self._settle_drain()
            return future
        elif isinstance(message, Release):
            return [job for job, _ in self._running.values()]
        else:
            logger.warning("producer %s dropped an unknown message %r", self._queue, type(message))
        return None

    def statistics(self) -> dict[str, int]:
        return {
            "executors": self._size,
            "busy": len(self._running),
            "claimed": self.claimed,
        }

    def _on_idle(self, executor: pykka.ActorRef[Any]) -> None:
        self._running.pop(executor.actor_urn, None)
        self._idle.append(executor)
        self._queue_claim()
        self._settle_drain()

    def _queue_claim(self) -> None:
        if self._want_claim and self._idle and not self._claim_queued and not self._draining:
            self._claim_queued = True
            self.actor_ref.tell(Claim())

    def _settle_drain(self) -> None:
        if self._draining and not self._running:
            for future in self._drained:
                future.set(None)
            self._drained.clear()

    def _claim(self) -> None:
        if self._draining or not self._idle:
            return
        # NOTE: under a steady load executors free up one at a time, so most
        # claims take one job and cost one commit. Profiles of the benchmark
        # show this loop as the worker node's throughput limit.
        limit = len(self._idle)
        self._next_poll = time.monotonic() + self._poll_interval
        try:
            rows = self._fetch(limit)
        except psycopg.Error as error:
            logger.warning(
                "claim on queue %s failed, retrying on the next poll: %s",
                self._queue,
                error,
                extra={"action": "claim_failed", "queue": self._queue},
            )
            self._close()
            return
        # A full batch suggests more jobs wait; claim again once executors free up.
        self._want_claim = len(rows) == limit
        for row in rows:
            self.claimed += 1
            job = job_from_row(row)
            executor = self._idle.popleft()
            cancellation = threading.Event()
            self._running[executor.actor_urn] = (job, cancellation)
            executor.tell(Execute(job, cancellation))

    def _fetch(self, limit: int) -> list[tuple[Any, ...]]:
        pooled = is_pooled(self._dsn)
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, f"producer {self._queue}", self._node_id)
            if self._relaxed_claims and not pooled:
                self._conn.execute("SET synchronous_commit = off")
        params = {"node": self._node_id, "queue": self._queue, "limit": limit}
        if self._relaxed_claims and pooled:
            # PgBouncer shares server sessions, so the setting may only last
            # for this transaction. That costs three more round trips a claim.
            with self._conn.transaction():
                self._conn.execute("SET LOCAL synchronous_commit = off")
                return self._conn.execute(self._statements.claim, params).fetchall()
        return self._conn.execute(self._statements.claim, params).fetchall()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def job_from_row(row: tuple[Any, ...]) -> Job:
    (
        job_id,
        queue,
        worker,
        args,
        meta,
        tags,
        attempt,
        max_attempts,
        priority,
        inserted_at,
        scheduled_at,
        attempted_at,
        attempted_by,
    ) = row
    return Job(
        worker=worker,
        args=args,
        queue=queue,
        priority=priority,
        max_attempts=max_attempts,
        meta=meta,
        tags=tuple(tags),
        scheduled_at=scheduled_at,
        id=job_id,
        state="executing",
        attempt=attempt,
        inserted_at=inserted_at,
        attempted_at=attempted_at,
        attempted_by=attempted_by,
    )
