"""The claim, unclaim and record statements on a real table: plans and matched rows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from relay_actors import Job
from relay_actors.actors.outcomes import failed_attempt
from relay_actors.actors.recording import OutcomeWriter
from relay_actors.inserting import execute_insert
from relay_actors.store.migrations import migrate
from relay_actors.store.statements import Statements, statements_for

NODE = "node-under-test"
QUEUE = "statements"
# Enough finished rows that a plan scanning the whole table costs more than the index.
FINISHED_ROWS = 5_000


@pytest.fixture
def conn(database_dsn: str, prefix: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_dsn, autocommit=True) as connection:
        migrate(connection, prefix)
        yield connection


def insert_job(conn: psycopg.Connection[Any], statements: Statements) -> int:
    job = Job(worker="w", args={}, queue=QUEUE)
    (row,) = execute_insert(statements, "unused", conn, [job], [{}])
    job_id: int = row[0]
    return job_id


def claim(conn: psycopg.Connection[Any], statements: Statements) -> tuple[int, int]:
    rows = conn.execute(statements.claim, {"node": NODE, "queue": QUEUE, "limit": 1}).fetchall()
    assert len(rows) == 1, f"expected one claimed job, got {rows}"
    return rows[0][0], rows[0][6]


def row_of(conn: psycopg.Connection[Any], prefix: str, job_id: int) -> tuple[Any, ...]:
    query = sql.SQL("SELECT state, attempt, attempted_by FROM {} WHERE id = %s").format(
        sql.Identifier(prefix, "jobs")
    )
    row = conn.execute(query, (job_id,)).fetchone()
    assert row is not None
    return row


def test_unclaim_matches_claimed_attempt(conn: psycopg.Connection[Any], prefix: str) -> None:
    statements = statements_for(prefix)
    job_id = insert_job(conn, statements)
    claimed_id, attempt = claim(conn, statements)
    assert claimed_id == job_id
    params = {"ids": [job_id], "node": NODE, "channel": "unused"}

    conn.execute(statements.unclaim, {**params, "attempts": [attempt + 1]})
    assert row_of(conn, prefix, job_id) == ("executing", attempt, NODE)

    conn.execute(statements.unclaim, {**params, "attempts": [attempt]})
    assert row_of(conn, prefix, job_id) == ("available", attempt - 1, None)


def test_outcome_writes_use_executing_index(conn: psycopg.Connection[Any], prefix: str) -> None:
    """The planner guesses 100 rows for a JSON batch: the write must still not scan the table."""
    statements = statements_for(prefix)
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (state, queue, worker) "
            "SELECT 'completed', %s, 'w' FROM generate_series(1, %s)"
        ).format(sql.Identifier(prefix, "jobs")),
        (QUEUE, FINISHED_ROWS),
    )
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(prefix, "jobs")))
    # A prepared statement of the nodes may settle on the generic plan.
    conn.execute("SET plan_cache_mode = force_generic_plan")
    batch = {
        "outcomes": Jsonb([{"id": 1, "attempt": 1, "state": "completed"}]),
        "notifications": Jsonb([]),
    }
    for statement, params in [
        (statements.record, batch),
        (statements.record_and_claim, {**batch, "node": NODE, "queue": QUEUE, "limit": 1}),
    ]:
        plan = "\n".join(
            row[0] for row in conn.execute(b"EXPLAIN " + statement, params).fetchall()
        )
        assert "Seq Scan on jobs" not in plan, plan
        assert "jobs_executing_idx" in plan, plan


def test_outcome_skips_same_attempt_of_other_node(
    conn: psycopg.Connection[Any], prefix: str
) -> None:
    """A rescue of an attempt must not end the same attempt number on another node.

    Returning a prefetched job unstarted gives its attempt number back, so a
    rescue prepared before the return would otherwise match the next claim.
    """
    statements = statements_for(prefix)
    job_id = insert_job(conn, statements)
    _, attempt = claim(conn, statements)
    rescue = failed_attempt(
        job_id=job_id,
        queue=QUEUE,
        attempt=attempt,
        max_attempts=20,
        error_type="relay_actors.failures.AttemptLost",
        message=f"node {NODE} stopped heartbeating",
        trace="",
        node_id=NODE,
        relay=None,
        delay=0.0,
        retry_state="available",
    )
    conn.execute(
        statements.unclaim,
        {"ids": [job_id], "attempts": [attempt], "node": NODE, "channel": "unused"},
    )
    (reclaimed,) = conn.execute(
        statements.claim, {"node": "other-node", "queue": QUEUE, "limit": 1}
    ).fetchall()
    assert reclaimed[6] == attempt

    OutcomeWriter(statements, "unused", None).write(conn, [rescue])

    assert row_of(conn, prefix, job_id) == ("executing", attempt, "other-node")
