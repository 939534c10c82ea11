"""`PeriodicActor`: base of the actors that do one database chore every interval."""

from __future__ import annotations

import logging
import time
from typing import Any

import psycopg
import pykka

from relay_actors.actors.messages import Tick
from relay_actors.store.connect import connect
from relay_actors.store.statements import Statements, statements_for

logger = logging.getLogger("relay_actors.periodic")


class PeriodicActor(pykka.ThreadingActor):
    """Runs `run_once` at most every `interval` seconds, when ticked.

    The instance's ticker sends `Tick` often; this class decides when the
    chore is due. The chore's connection opens on first use and reopens after
    a database error, which is logged once per failure streak.
    """

    use_daemon_thread = True
    role = "periodic"

    def __init__(self, *, dsn: str, prefix: str, node_id: str, interval: float) -> None:
        super().__init__()
        self.dsn = dsn
        self.prefix = prefix
        self.node_id = node_id
        self.interval = interval
        self.statements: Statements = statements_for(prefix)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._next_run = 0.0
        self._failing = False
        self.runs = 0

    def on_stop(self) -> None:
        self._close()

    def on_failure(self, *exc_info: Any) -> None:
        self._close()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Tick):
            if time.monotonic() >= self._next_run:
                self.run_now()
            return None
        return self.receive_other(message)

    def receive_other(self, message: Any) -> Any:
        logger.warning(
            "%s dropped an unknown message %r",
            self.role,
            type(message),
            extra={"action": "unknown_message"},
        )
        return None

    def run_now(self) -> None:
        """Run the chore now, and schedule the next run one interval later."""
        self._next_run = time.monotonic() + self.interval
        try:
            if self._conn is None or self._conn.closed:
                self._conn = connect(self.dsn, self.role, self.node_id)
            self.run_once(self._conn)
        except psycopg.Error as error:
            if not self._failing:
                logger.warning(
                    "%s failed on node %s, retrying every %.1f s: %s",
                    self.role,
                    self.node_id,
                    self.interval,
                    error,
                    extra={"action": f"{self.role}_failed", "node": self.node_id},
                )
            self._failing = True
            self._close()
            return
        if self._failing:
            logger.info(
                "%s on node %s works again",
                self.role,
                self.node_id,
                extra={"action": f"{self.role}_recovered", "node": self.node_id},
            )
            self._failing = False
        self.runs += 1

    def statistics(self) -> dict[str, Any]:
        return {"runs": self.runs, "failing": self._failing}

    def run_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
