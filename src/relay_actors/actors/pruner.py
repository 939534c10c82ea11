"""PrunerActor: deletes finished jobs older than the configured age."""

from __future__ import annotations

import logging
from typing import Any

import psycopg

from relay_actors.actors.periodic import PeriodicActor

logger = logging.getLogger("relay_actors.pruner")

PRUNE_LIMIT = 10_000


class PrunerActor(PeriodicActor):
    """Deletes completed, discarded and cancelled jobs older than `max_age` seconds.

    A relay awaited after its job was pruned returns `Error("not_found")`.
    """

    role = "pruner"

    def __init__(self, *, max_age: float, **options: Any) -> None:
        super().__init__(**options)
        self._max_age = max_age
        self.pruned = 0

    def run_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        cursor = conn.execute(self.statements.prune, {"age": self._max_age, "limit": PRUNE_LIMIT})
        if cursor.rowcount > 0:
            self.pruned += cursor.rowcount
            logger.info(
                "pruned %d finished jobs older than %.0f s",
                cursor.rowcount,
                self._max_age,
                extra={"action": "prune"},
            )
