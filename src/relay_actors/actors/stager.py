"""StagerActor: makes due scheduled and retryable jobs available."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from relay_actors.actors.periodic import PeriodicActor

logger = logging.getLogger("relay_actors.stager")

STAGE_LIMIT = 5000


class StagerActor(PeriodicActor):
    """Moves jobs whose `scheduled_at` has passed to `available`, and wakes their queues.

    Several nodes may stage at once: SKIP LOCKED makes them share the rows.
    """

    role = "stager"

    def __init__(self, *, insert_channel: str, **options: Any) -> None:
        super().__init__(**options)
        self._insert_channel = insert_channel
        self.staged = 0

    def run_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        params = {"limit": STAGE_LIMIT, "channel": self._insert_channel}
        rows = conn.execute(self.statements.stage, params).fetchall()
        for queue, count, _ in rows:
            self.staged += count
            logger.debug("staged %d jobs of queue %s", count, queue, extra={"action": "stage"})
