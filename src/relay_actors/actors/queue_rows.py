"""`QueueRows`: the rows of one queue as its producer reads and writes them.

It owns the producer's connections and runs its statements: claims, outcome
writes, returns of prefetched jobs, cancellation checks and audits. Each method
raises `psycopg.Error` when its statement fails; the producer decides what a
failure means, and calls `close()` so that the next statement reconnects.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from relay_actors.actors.messages import AttemptOutcome
from relay_actors.actors.recording import OutcomeWriter
from relay_actors.job import Job
from relay_actors.names import insert_channel
from relay_actors.store.connect import connect, is_pooled
from relay_actors.store.statements import statements_for

Row = tuple[Any, ...]


class QueueRows:
    """The jobs table as seen by the producer of `queue` on node `node_id`.

    With `relaxed_claims`, claims that record no outcomes commit on a second
    connection with `synchronous_commit = off`, so that outcomes, and claims
    made in their statement, still wait for the WAL flush. With
    `relaxed_outcomes` (direct connections only), the one connection commits
    claims and outcomes alike without waiting for the flush.
    """

    def __init__(
        self,
        *,
        dsn: str,
        prefix: str,
        queue: str,
        node_id: str,
        relaxed_claims: bool,
        secret: bytes | None,
        relaxed_outcomes: bool = False,
    ) -> None:
        self._dsn = dsn
        self._prefix = prefix
        self._queue = queue
        self._node_id = node_id
        self._relaxed_claims = relaxed_claims
        self._relaxed_outcomes = relaxed_outcomes
        self._statements = statements_for(prefix)
        self._writer = OutcomeWriter(self._statements, insert_channel(prefix), secret)
        self._conn: psycopg.Connection[Row] | None = None
        # With relaxed claims on a direct connection: the claims' own connection.
        self._claim_conn: psycopg.Connection[Row] | None = None

    def write_and_claim(self, outcomes: list[AttemptOutcome], limit: int) -> list[Row]:
        """Record `outcomes` and claim up to `limit` jobs, in one statement when there are both.

        Returns the claimed rows in the claim's order: priority, then
        scheduled time, then id.
        """
        if not outcomes:
            return in_claim_order(self._claim(limit))
        conn = self._connection()
        if limit == 0:
            self._writer.write(conn, outcomes)
            return []
        rows = self._writer.write_and_claim(
            conn, outcomes, node=self._node_id, queue=self._queue, limit=limit
        )
        return in_claim_order(rows)

    def unclaim(self, jobs: Sequence[Job]) -> None:
        """Return claimed jobs that never started to the queue, with their attempt not counted."""
        self._connection().execute(
            self._statements.unclaim,
            {
                "ids": [job.id for job in jobs],
                "attempts": [job.attempt for job in jobs],
                "node": self._node_id,
                "channel": insert_channel(self._prefix),
            },
        )

    def cancelled_among(self, ids: list[int]) -> set[int]:
        """Return which of the jobs `ids` were cancelled."""
        rows = self._connection().execute(self._statements.cancelled_among, {"ids": ids})
        return {row[0] for row in rows.fetchall()}

    def unaccounted(self, known: list[int], limit: int) -> list[Row]:
        """Return up to `limit` executing jobs of this queue and node whose ids are not `known`."""
        params = {"node": self._node_id, "queue": self._queue, "known": known, "limit": limit}
        # Not prepared: the generic plan of a prepared statement compares each
        # row with every known id, which took 1.1 s for 10,000 of each.
        conn = self._connection()
        return conn.execute(self._statements.unaccounted, params, prepare=False).fetchall()

    def close(self) -> None:
        for conn in (self._conn, self._claim_conn):
            if conn is not None:
                conn.close()
        self._conn = None
        self._claim_conn = None

    def _claim(self, limit: int) -> list[Row]:
        params = {"node": self._node_id, "queue": self._queue, "limit": limit}
        # With relaxed outcomes the main connection skips the flush already.
        if not self._relaxed_claims or self._relaxed_outcomes:
            return self._connection().execute(self._statements.claim, params).fetchall()
        if not is_pooled(self._dsn):
            return self._claim_connection().execute(self._statements.claim, params).fetchall()
        # PgBouncer shares server sessions, so the setting may only last for
        # this transaction. That costs three more round trips a claim.
        conn = self._connection()
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = off")
            return conn.execute(self._statements.claim, params).fetchall()

    def _connection(self) -> psycopg.Connection[Row]:
        if self._conn is None or self._conn.closed:
            conn = connect(self._dsn, f"producer {self._queue}", self._node_id)
            if self._relaxed_outcomes:
                try:
                    conn.execute("SET synchronous_commit = off")
                except BaseException:
                    conn.close()
                    raise
            self._conn = conn
        return self._conn

    def _claim_connection(self) -> psycopg.Connection[Row]:
        """Return the connection for relaxed claims, whose commits skip the WAL flush."""
        if self._claim_conn is None or self._claim_conn.closed:
            self._claim_conn = connect(self._dsn, f"producer {self._queue} claims", self._node_id)
            self._claim_conn.execute("SET synchronous_commit = off")
        return self._claim_conn


# Positions of the claim statement's columns that order a claim.
_ID, _PRIORITY, _SCHEDULED_AT = 0, 8, 10


def in_claim_order(rows: list[Row]) -> list[Row]:
    """Sort claimed rows by priority, then scheduled time, then id.

    `UPDATE ... RETURNING` returns rows in the order its join visits them,
    not in the order of the subquery that chose them.
    """
    return sorted(rows, key=lambda row: (row[_PRIORITY], row[_SCHEDULED_AT], row[_ID]))


def job_from_row(row: Row) -> Job:
    """Return the job of a row with the columns of a claim."""
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
