"""Migrations: upgrades, and a schema that already has another application's tables.

relay_actors' default schema is `public`, where an application's own tables
live. A table of the same name must stop the migration with an error that
names it and the `prefix` to use, and must be left as it was.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from relay_actors import ConfigurationError, Instance
from relay_actors.cli import main
from relay_actors.store import migrations
from relay_actors.store.migrations import LATEST_VERSION, migrate


def create_table(conn: psycopg.Connection[Any], schema: str, table: str, columns: str) -> None:
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.execute(
        sql.SQL("CREATE TABLE {} ({})").format(sql.Identifier(schema, table), sql.SQL(columns))
    )


def exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (f'"{schema}"."{table}"',)).fetchone()
    return row is not None and row[0] is not None


def test_migrate_twice_applies_once(db: psycopg.Connection[Any], prefix: str) -> None:
    assert migrate(db, prefix) == list(range(1, LATEST_VERSION + 1))
    assert migrate(db, prefix) == []


def test_upgrade_from_version_2_keeps_rows(
    db: psycopg.Connection[Any], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema at version 2 moves to the id-keyed index of executing jobs, rows intact."""
    with monkeypatch.context() as patched:
        patched.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:2])
        assert migrate(db, prefix) == [1, 2]
    jobs = sql.Identifier(prefix, "jobs")
    db.execute(
        sql.SQL(
            "INSERT INTO {} (state, queue, worker, attempt, attempted_by) "
            "VALUES ('executing', 'q', 'w', 1, 'node-1'), ('completed', 'q', 'w', 1, 'node-1')"
        ).format(jobs)
    )

    assert migrate(db, prefix) == list(range(3, LATEST_VERSION + 1))

    indexes = db.execute(
        "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'jobs'",
        (prefix,),
    ).fetchall()
    assert sorted(row[0] for row in indexes) == [
        "jobs_executing_id_idx",
        "jobs_fetch_idx",
        "jobs_pkey",
        "jobs_prune_idx",
        "jobs_stage_idx",
    ]
    rows = db.execute(sql.SQL("SELECT state FROM {} ORDER BY id").format(jobs)).fetchall()
    assert rows == [("executing",), ("completed",)]


def test_foreign_version_table_left_alone(db: psycopg.Connection[Any], prefix: str) -> None:
    """A framework's schema_migrations (Rails keeps string versions) gets no relay_actors row."""
    create_table(db, prefix, "schema_migrations", "version varchar PRIMARY KEY")
    db.execute(
        sql.SQL("INSERT INTO {} VALUES ('20240101120000')").format(
            sql.Identifier(prefix, "schema_migrations")
        )
    )

    with pytest.raises(ConfigurationError) as raised:
        migrate(db, prefix)

    message = str(raised.value)
    assert "schema_migrations" in message
    assert "version character varying" in message
    assert "prefix='relay_actors'" in message
    rows = db.execute(
        sql.SQL("SELECT version FROM {}").format(sql.Identifier(prefix, "schema_migrations"))
    ).fetchall()
    assert rows == [("20240101120000",)]
    assert not exists(db, prefix, "jobs")


@pytest.mark.parametrize(
    ("name", "foreign", "existing", "not_created"),
    [
        (
            "jobs",
            "CREATE TABLE {} (id int PRIMARY KEY, title text)",
            'relation "jobs" already exists',
            ["schema_migrations", "nodes"],
        ),
        (
            "jobs_state",
            "CREATE TYPE {} AS ENUM ('draft', 'sent')",
            'type "jobs_state" already exists',
            ["schema_migrations", "nodes", "jobs"],
        ),
    ],
    ids=["jobs table", "jobs_state type"],
)
def test_foreign_name_left_alone(
    db: psycopg.Connection[Any],
    prefix: str,
    name: str,
    foreign: str,
    existing: str,
    not_created: list[str],
) -> None:
    """Another application's table or type with a name that relay_actors uses stops it."""
    db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(prefix)))
    db.execute(sql.SQL(foreign).format(sql.Identifier(prefix, name)))

    with pytest.raises(ConfigurationError) as raised:
        migrate(db, prefix)

    message = str(raised.value)
    assert existing in message
    assert "--prefix relay_actors" in message
    # The failed migration rolled back, its version table included.
    for table in not_created:
        assert not exists(db, prefix, table), table


def test_start_rejects_foreign_jobs_table(
    db: psycopg.Connection[Any], prefix: str, start_instance: Callable[..., Instance]
) -> None:
    create_table(db, prefix, "jobs", "id int PRIMARY KEY")

    with pytest.raises(ConfigurationError, match="relay_actors did not create it"):
        start_instance()


def test_cli_migrate_conflict_exits_2(
    db: psycopg.Connection[Any],
    database_dsn: str,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    create_table(db, prefix, "jobs", "id int PRIMARY KEY")

    with caplog.at_level(logging.ERROR, logger="relay_actors.cli"):
        status = main(["migrate", "--dsn", database_dsn, "--prefix", prefix])

    assert status == 2
    failures = [r for r in caplog.records if getattr(r, "action", "") == "migrate_failed"]
    assert len(failures) == 1
    assert "cannot migrate the schema" in failures[0].getMessage()


def test_upgrade_to_domains_keeps_rows(
    db: psycopg.Connection[Any], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Version 5 keeps every row and the same rules, as domains instead of CHECK constraints."""
    with monkeypatch.context() as patched:
        patched.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:4])
        assert migrate(db, prefix) == [1, 2, 3, 4]
    jobs = sql.Identifier(prefix, "jobs")
    states = [
        "available",
        "scheduled",
        "executing",
        "retryable",
        "completed",
        "discarded",
        "cancelled",
    ]
    for state in states:
        db.execute(
            sql.SQL(
                "INSERT INTO {} (state, queue, worker, priority, max_attempts) "
                "VALUES (%s, 'q', 'w', 9, 1)"
            ).format(jobs),
            (state,),
        )

    assert migrate(db, prefix) == [5]

    rows = db.execute(
        sql.SQL("SELECT state, priority, max_attempts FROM {} ORDER BY id").format(jobs)
    ).fetchall()
    assert rows == [(state, 9, 1) for state in states]
    checks = db.execute(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype = 'c'",
        (jobs.as_string(db),),
    ).fetchone()
    assert checks == (0,)
    columns = db.execute(
        "SELECT column_name, domain_name FROM information_schema.columns "
        "WHERE table_schema = %s AND table_name = 'jobs' AND domain_name IS NOT NULL "
        "ORDER BY column_name",
        (prefix,),
    ).fetchall()
    assert columns == [
        ("max_attempts", "jobs_max_attempts"),
        ("priority", "jobs_priority"),
        ("state", "jobs_state"),
    ]


@pytest.mark.parametrize(
    ("column", "value"),
    [("state", "running"), ("priority", 10), ("priority", -1), ("max_attempts", 0)],
)
def test_domains_reject_invalid_values(
    db: psycopg.Connection[Any], prefix: str, column: str, value: object
) -> None:
    """A row written with SQL, not through relay_actors, still gets the rules checked."""
    migrate(db, prefix)
    jobs = sql.Identifier(prefix, "jobs")
    insert = sql.SQL("INSERT INTO {} (queue, worker, {}) VALUES ('q', 'w', %s)").format(
        jobs, sql.Identifier(column)
    )
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(insert, (value,))
    db.execute(sql.SQL("INSERT INTO {} (queue, worker) VALUES ('q', 'w')").format(jobs))
    update = sql.SQL("UPDATE {} SET {} = %s").format(jobs, sql.Identifier(column))
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(update, (value,))
