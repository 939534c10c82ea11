"""Versioned, idempotent schema migrations, applied under an advisory lock."""

from __future__ import annotations

import logging

import psycopg
from psycopg import errors, sql

from relay_actors.errors import ConfigurationError

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
    (
        3,
        # Version 2's index keyed executing rows by node, so a write that
        # looked up one job read every entry of its node, including those
        # of jobs that finished since the last VACUUM. Each write then cost
        # time in proportion to the jobs the node had run: with autovacuum
        # off, a worker node's 10,000-job rounds slowed from 2.4 s to 28 s
        # over 20 rounds. Keyed by id, a lookup reads its own entries only.
        """
        CREATE INDEX jobs_executing_id_idx ON {schema}.jobs (id)
            WHERE state = 'executing';
        DROP INDEX {schema}.jobs_executing_idx;
        """,
    ),
    (
        4,
        # The pruner finds finished jobs by the time they finished. Without
        # this index, each run that found fewer old jobs than its batch limit
        # read the whole table, once a minute on every node: 33 ms for
        # 300,000 finished jobs on a 2-vCPU machine, against 0.2 ms with it.
        # In a loop of 800 outcome writes, the entry that a finishing job
        # adds cost no measurable time.
        # NOTE: like versions 2 and 3, this builds the index inside the
        # migration's transaction, so inserts into a large table wait for it.
        """
        CREATE INDEX jobs_prune_idx
            ON {schema}.jobs ((coalesce(completed_at, discarded_at, cancelled_at)))
            WHERE state IN ('completed', 'discarded', 'cancelled');
        """,
    ),
    (
        5,
        # The same rules as version 1's CHECK constraints, kept by domains.
        # PostgreSQL stores a table's CHECK constraints as text and parses
        # them again in every INSERT and UPDATE of the table, so each insert,
        # claim and outcome paid for it. A profile with domains showed no such
        # parsing. In five interleaved loops on a 2-vCPU machine, an insert,
        # claim and outcome of one job took 26 to 66 us less in all, of 530 to
        # 1,370 us.
        # NOTE: changing the column types checks every row and rebuilds the
        # indexes, holding a lock that makes inserts wait: 2.6 s over
        # 1,000,000 rows.
        """
        CREATE DOMAIN {schema}.jobs_state AS text CHECK (VALUE IN (
            'available', 'scheduled', 'executing', 'retryable',
            'completed', 'discarded', 'cancelled'));
        CREATE DOMAIN {schema}.jobs_max_attempts AS smallint CHECK (VALUE > 0);
        CREATE DOMAIN {schema}.jobs_priority AS smallint CHECK (VALUE BETWEEN 0 AND 9);
        ALTER TABLE {schema}.jobs
            DROP CONSTRAINT jobs_state_check,
            DROP CONSTRAINT jobs_max_attempts_check,
            DROP CONSTRAINT jobs_priority_check,
            ALTER COLUMN state TYPE {schema}.jobs_state,
            ALTER COLUMN max_attempts TYPE {schema}.jobs_max_attempts,
            ALTER COLUMN priority TYPE {schema}.jobs_priority;
        """,
    ),
)

LATEST_VERSION = MIGRATIONS[-1][0]

# Columns of relay_actors' own version table, by name, with their types.
_VERSION_TABLE_COLUMNS = {"version": "integer", "applied_at": "timestamp with time zone"}
_OWN_SCHEMA_HINT = (
    "give relay_actors a schema of its own, for example prefix='relay_actors' in "
    "start() or --prefix relay_actors on the command line"
)


def migrate(conn: psycopg.Connection[tuple[object, ...]], prefix: str) -> list[int]:
    """Create or upgrade the schema `prefix`; return the versions applied now.

    Runs in one transaction holding a transaction-level advisory lock keyed on
    the schema, so nodes starting together apply each version once.

    Raises:
        ConfigurationError: the schema has a table or type of another
            application with a name that relay_actors uses; nothing was changed.
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
        _check_version_table(conn, prefix)
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
            try:
                conn.execute(sql.SQL(statements).format(schema=schema))
            except (errors.DuplicateTable, errors.DuplicateObject) as error:
                raise ConfigurationError(
                    f"cannot create relay_actors' tables and types in schema {prefix!r}: "
                    f"{error.diag.message_primary}, and relay_actors did not create it; "
                    f"{_OWN_SCHEMA_HINT}"
                ) from error
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


def _check_version_table(conn: psycopg.Connection[tuple[object, ...]], prefix: str) -> None:
    """Raise ConfigurationError if `prefix`.schema_migrations is another application's table.

    Frameworks such as Rails and Ecto keep their own migration versions in a
    table of that name. relay_actors must not read or add versions there.
    """
    # pg_attribute lists the columns whatever this role's privileges on the
    # table, where information_schema would hide them.
    table = sql.Identifier(prefix, "schema_migrations").as_string(conn)
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
        "WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
        (table,),
    ).fetchall()
    columns = {str(name): str(kind) for name, kind in rows}
    if columns == _VERSION_TABLE_COLUMNS:
        return
    listed = ", ".join(f"{name} {kind}" for name, kind in sorted(columns.items()))
    raise ConfigurationError(
        f"schema {prefix!r} has a table schema_migrations that relay_actors did not create "
        f"(columns: {listed}), for example another framework's; {_OWN_SCHEMA_HINT}"
    )
