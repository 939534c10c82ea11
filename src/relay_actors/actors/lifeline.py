"""LifelineActor: the node's heartbeat, and rescue of jobs left by dead nodes."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from relay_actors.actors.messages import Record
from relay_actors.actors.outcomes import failed_attempt, relay_target
from relay_actors.actors.periodic import PeriodicActor
from relay_actors.actors.slot import ActorSlot
from relay_actors.failures import AttemptLost
from relay_actors.worker import registered_worker_names

logger = logging.getLogger("relay_actors.lifeline")

RESCUE_LIMIT = 1000
# Rows of nodes silent this long are deleted, so status shows live nodes.
STALE_NODE_SECONDS = 3600.0
LOST_TYPE = f"{AttemptLost.__module__}.{AttemptLost.__qualname__}"


class LifelineActor(PeriodicActor):
    """Writes the node's heartbeat every interval and rescues orphaned jobs.

    A job is orphaned when it is executing on a node whose heartbeat is older
    than `rescue_after` seconds, or whose row is gone. Its attempt is recorded
    as failed (so a waiting caller gets the `JobError`), and the job becomes
    available again, or discarded if that was its last attempt. A job of a
    live node is never rescued while heartbeats arrive within `rescue_after`.
    """

    role = "lifeline"

    def __init__(
        self,
        *,
        name: str,
        queues: dict[str, int],
        rescue_after: float,
        acker: ActorSlot,
        statistics: Callable[[], dict[str, Any]],
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self._name = name
        self._queues = queues
        self._rescue_after = rescue_after
        self._acker = acker
        self._statistics = statistics
        self.rescued = 0

    def run_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        conn.execute(
            self.statements.heartbeat,
            {
                "node_id": self.node_id,
                "name": self._name,
                "queues": Jsonb(self._queues),
                "workers": registered_worker_names(),
                "statistics": Jsonb(self._statistics()),
            },
        )
        if self._queues:
            self._rescue(conn)
            conn.execute(self.statements.delete_stale_nodes, {"age": STALE_NODE_SECONDS})

    def _rescue(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        params = {"rescue_after": self._rescue_after, "limit": RESCUE_LIMIT}
        rows = conn.execute(self.statements.find_orphans, params).fetchall()
        for job_id, queue, worker, meta, attempt, max_attempts, attempted_by in rows:
            logger.warning(
                "rescuing job %s of queue %s: node %s stopped during attempt %s",
                job_id,
                queue,
                attempted_by,
                attempt,
                extra={"action": "rescue", "job_id": job_id, "node": attempted_by},
            )
            outcome = failed_attempt(
                job_id=job_id,
                queue=queue,
                attempt=attempt,
                max_attempts=max_attempts,
                error_type=LOST_TYPE,
                message=(
                    f"node {attempted_by} stopped heartbeating during attempt {attempt} of "
                    f"worker {worker}; rescued by node {self.node_id}"
                ),
                trace="",
                node_id=str(attempted_by),
                relay=relay_target(job_id, meta, self.prefix),
                delay=0.0,
                retry_state="available",
            )
            if self._acker.tell(Record(outcome)):
                self.rescued += 1
