"""ProducerActor: claims a queue's jobs for its pool of executors."""

from __future__ import annotations

import logging
from collections import deque
from typing import Any

import psycopg
import pykka
from pykka import ThreadingFuture

from relay_actors.actors.executor import ExecutorActor
from relay_actors.actors.messages import Claim, Drain, Execute, ExecutorIdle, Tick, Wake
from relay_actors.job import Job
from relay_actors.store.connect import connect
from relay_actors.store.statements import statements_for

logger = logging.getLogger("relay_actors.producer")


class ProducerActor(pykka.ThreadingActor):
    """Claims available jobs of one queue, up to the number of idle executors.

    Wake-ups (inserts, ticks, executors becoming idle) are coalesced: any
    number of them queued together lead to one claim. Claiming runs on this
    actor's thread with a statement timeout, so the inbox never waits forever.
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
        acker: pykka.ActorRef[Any],
    ) -> None:
        super().__init__()
        self._dsn = dsn
        self._prefix = prefix
        self._queue = queue
        self._size = executors
        self._node_id = node_id
        self._acker = acker
        self._statements = statements_for(prefix)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._executors: list[pykka.ActorRef[Any]] = []
        self._idle: deque[pykka.ActorRef[Any]] = deque()
        self._want_claim = True
        self._claim_queued = False
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
        for executor in self._executors:
            executor.stop(block=False)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Wake | Tick):
            self._want_claim = True
            self._queue_claim()
        elif isinstance(message, Claim):
            self._claim_queued = False
            self._claim()
        elif isinstance(message, ExecutorIdle):
            self._idle.append(message.executor)
            self._queue_claim()
            self._settle_drain()
        elif isinstance(message, Drain):
            self._draining = True
            future: ThreadingFuture[None] = ThreadingFuture()
            self._drained.append(future)
            self._settle_drain()
            return future
        else:
            logger.warning("producer %s dropped an unknown message %r", self._queue, type(message))
        return None

    def statistics(self) -> dict[str, int]:
        return {
            "executors": self._size,
            "busy": self._size - len(self._idle),
            "claimed": self.claimed,
        }

    def _queue_claim(self) -> None:
        if self._want_claim and self._idle and not self._claim_queued and not self._draining:
            self._claim_queued = True
            self.actor_ref.tell(Claim())

    def _settle_drain(self) -> None:
        if self._draining and len(self._idle) == self._size:
            for future in self._drained:
                future.set(None)
            self._drained.clear()

    def _claim(self) -> None:
        if self._draining or not self._idle:
            return
        limit = len(self._idle)
        try:
            rows = self._fetch(limit)
        except psycopg.Error as error:
            logger.warning(
                "claim on queue %s failed, retrying on the next tick: %s",
                self._queue,
                error,
                extra={"action": "claim_failed", "queue": self._queue},
            )
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            return
        # A full batch suggests more jobs wait; claim again once executors free up.
        self._want_claim = len(rows) == limit
        for row in rows:
            self.claimed += 1
            self._idle.popleft().tell(Execute(_job_from_row(row)))

    def _fetch(self, limit: int) -> list[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, f"producer {self._queue}", self._node_id)
        params = {"node": self._node_id, "queue": self._queue, "limit": limit}
        return self._conn.execute(self._statements.claim, params).fetchall()


def _job_from_row(row: tuple[Any, ...]) -> Job:
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
