"""The prune statement on a real table: which jobs it deletes, in what order, and what it reads."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from relay_actors.store.migrations import migrate
from relay_actors.store.statements import statements_for
from tests.integration.test_statements import entries_read, unindexed_scans

YOUNG_ROWS = 5_000
# Index entries and rows that a prune reads besides two per old job (its entry
# in the index of finished jobs, and its row found by id). Without an index on
# the time a job finished, a prune that found fewer old jobs than its limit
# read every one of the YOUNG_ROWS rows.
ENTRIES_PER_PRUNE = 20
HOUR = 3600.0


@pytest.fixture
def conn(db: psycopg.Connection[Any], prefix: str) -> psycopg.Connection[Any]:
    """The test database's connection, with relay_actors' tables migrated into `prefix`."""
    migrate(db, prefix)
    return db


def insert_rows(conn: psycopg.Connection[Any], prefix: str, rows: list[tuple[str, str]]) -> None:
    """Insert one job per (state, age) pair, with the state's time column set `age` ago."""
    time_columns = {
        "completed": "completed_at",
        "discarded": "discarded_at",
        "cancelled": "cancelled_at",
        "executing": "attempted_at",
        "available": "scheduled_at",
        "retryable": "scheduled_at",
    }
    for state, age in rows:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (state, queue, worker, {}) "
                "VALUES (%s, 'q', %s, now() - %s::interval)"
            ).format(sql.Identifier(prefix, "jobs"), sql.Identifier(time_columns[state])),
            (state, f"{state} {age}", age),
        )


def remaining_workers(conn: psycopg.Connection[Any], prefix: str) -> list[str]:
    query = sql.SQL("SELECT worker FROM {} ORDER BY id").format(sql.Identifier(prefix, "jobs"))
    return [row[0] for row in conn.execute(query).fetchall()]


def test_prune_deletes_earliest_finished_first(conn: psycopg.Connection[Any], prefix: str) -> None:
    insert_rows(
        conn,
        prefix,
        [
            ("completed", "3 hours"),
            ("discarded", "2 hours"),
            ("cancelled", "4 hours"),
            ("completed", "10 seconds"),
            ("executing", "5 hours"),
            ("available", "5 hours"),
            ("retryable", "5 hours"),
        ],
    )
    prune = statements_for(prefix).prune

    first = conn.execute(prune, {"age": HOUR, "limit": 2})

    assert first.rowcount == 2
    assert "cancelled 4 hours" not in remaining_workers(conn, prefix)
    assert "completed 3 hours" not in remaining_workers(conn, prefix)

    second = conn.execute(prune, {"age": HOUR, "limit": 10})

    assert second.rowcount == 1
    assert remaining_workers(conn, prefix) == [
        "completed 10 seconds",
        "executing 5 hours",
        "available 5 hours",
        "retryable 5 hours",
    ]


@pytest.mark.parametrize("old_rows", [0, 10])
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_prune_reads_only_old_entries(
    conn: psycopg.Connection[Any], prefix: str, mode: str, old_rows: int
) -> None:
    """A prune reads the entries and rows of old jobs, not every finished job.

    Counted from the plan's actual rows, which unlike time does not depend on
    the machine. Both plan modes, because the pruner's prepared statement may
    settle on the generic plan.
    """
    jobs = sql.Identifier(prefix, "jobs")
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (state, queue, worker, completed_at) "
            "SELECT 'completed', 'q', 'w', now() FROM generate_series(1, %s)"
        ).format(jobs),
        (YOUNG_ROWS,),
    )
    insert_rows(conn, prefix, [("completed", "2 hours")] * old_rows)
    conn.execute(sql.SQL("ANALYZE {}").format(jobs))
    conn.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.SQL(mode)))
    prune = statements_for(prefix).prune

    with conn.transaction(force_rollback=True):
        plan = [
            row[0]
            for row in conn.execute(
                b"EXPLAIN (ANALYZE) " + prune, {"age": HOUR, "limit": 10_000}
            ).fetchall()
        ]

    report = "\n".join(plan)
    assert unindexed_scans(plan) == [], report
    assert entries_read(plan) <= ENTRIES_PER_PRUNE + 2 * old_rows, report
    assert plan[0].startswith("Delete on jobs"), report
