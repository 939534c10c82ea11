"""Versioned, idempotent schema migrations, applied under an advisory lock."""

from __future__ import annotations

import logging

import psycopg
from psycopg import sql

logger = logging.getLogger("relay_actors.store")

# Each entry is (version, statements). Statements use {schema} for the quoted
# schema name. Released migrations are never edited: add a new version.
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE {schema}.jobs (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            state text NOT NULL DEFAULT 'available' CHECK (state IN (
                'available', 'scheduled', 'executing', 'retryable',
                'completed', 'discarded', 'cancelled')),
            queue text NOT NULL,
            worker text NOT NULL,
            args jsonb NOT NULL DEFAULT '{{}}',
            meta jsonb NOT NULL DEFAULT '{{}}',
            tags text[] NOT NULL DEFAULT '{{}}',
            errors jsonb NOT NULL DEFAULT '[]',
            attempt smallint NOT NULL DEFAULT 0,
            max_attempts smallint NOT NULL DEFAULT 20 CHECK (max_attempts > 0),
            priority smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 9),
            attempted_by text,
            inserted_at timestamptz NOT NULL DEFAULT now(),
            scheduled_at timestamptz NOT NULL DEFAULT now(),
            attempted_at timestamptz,
            completed_at timestamptz,
            discarded_at timestamptz,
            cancelled_at timestamptz,
            outcome text,
            result bytea
        );
        CREATE INDEX jobs_fetch_idx ON {schema}.jobs (queue, priority, scheduled_at, id)
            WHERE state = 'available';
        CREATE INDEX jobs_stage_idx ON {schema}.jobs (scheduled_at)
            WHERE state IN ('scheduled', 'retryable');
        CREATE TABLE {schema}.nodes (
            node_id text PRIMARY KEY,
            name text NOT NULL,
            queues jsonb NOT NULL DEFAULT '{{}}',
            workers text[] NOT NULL DEFAULT '{{}}',
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now(),
            statistics jsonb NOT NULL DEFAULT '{{}}'
        );
        """,
    ),
    (
        2,
        # Statements that join outcomes to their executing rows (recording,
        # rescue, returning prefetched jobs) find those rows through this
        # index. Without it the planner, which guesses 100 rows for a JSON
        # batch, chose a hash join over a scan of the whole table, so every
        # write cost time in proportion to the table's size.
        """
        CREATE INDEX jobs_executing_idx ON {schema}.jobs (attempted_by)
            WHERE state = 'executing';
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]


def migrate(conn: psycopg.Connection[tuple[object, ...]], prefix: str) -> list[int]:
    """Create or upgrade the schema `prefix`; return the versions applied now.

    Runs in one transaction holding a transaction-level advisory lock keyed on
    the schema, so nodes starting together apply each version once.
    """
    schema = sql.Identifier(prefix)
    applied_now: list[int] = []
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"relay_actors:{prefix}",)
        )
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {}.schema_migrations "
                "(version int PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(schema)
        )
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.schema_migrations").format(schema)
        ).fetchall()
        done = {row[0] for row in rows}
        newer = [
            version for version in done if isinstance(version, int) and version > LATEST_VERSION
        ]
        if newer:
            logger.warning(
                "schema %s has migration %s, newer than this release's %s",
                prefix,
                max(newer),
                LATEST_VERSION,
                extra={"action": "migrate"},
            )
        for version, statements in MIGRATIONS:
            if version in done:
                continue
            conn.execute(sql.SQL(statements).format(schema=schema))
            conn.execute(
                sql.SQL("INSERT INTO {}.schema_migrations (version) VALUES (%s)").format(schema),
                (version,),
            )
            applied_now.append(version)
    if applied_now:
        logger.info(
            "schema %s migrated to version %s", prefix, applied_now[-1], extra={"action": "migrate"}
        )
    return applied_now
