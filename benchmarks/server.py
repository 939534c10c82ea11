"""The PostgreSQL server under test: DSN, embedded server, schemas, settings and WAL counters."""

from __future__ import annotations

import logging
import os
import platform
import secrets
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import metadata
from typing import Any

import psycopg
from psycopg import sql

logger = logging.getLogger("benchmarks.server")

BACKEND_EXIT_TIMEOUT_SECONDS = 15.0
# The WAL writer reports its counters on each of its rounds, every
# wal_writer_delay (200 ms by default).
WAL_WRITER_REPORT_SECONDS = 0.5


@contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, str]]:
    """Yield (DSN, kind): the given DSN, else $RELAY_ACTORS_DSN, else a new embedded server.

    The embedded server is stopped, and its files deleted, when the block ends.
    """
    dsn = dsn or os.environ.get("RELAY_ACTORS_DSN")
    if dsn:
        yield dsn, "given"
        return
    from relay_actors.embedded import EmbeddedServer

    logger.info("starting an embedded PostgreSQL server")
    server = EmbeddedServer()
    try:
        yield server.dsn, "embedded"
    finally:
        server.stop()
        logger.info("embedded PostgreSQL server stopped")


@contextmanager
def fresh_schema(dsn: str) -> Iterator[str]:
    """Yield the name of a new, empty schema `bench_<hex>`, dropped with CASCADE afterwards."""
    schema = f"bench_{secrets.token_hex(6)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield schema
    finally:
        drop_schema(dsn, schema)


def drop_schema(dsn: str, schema: str) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    except psycopg.Error as error:
        logger.error("could not drop schema %s, drop it by hand: %s", schema, error)


def environment(dsn: str, kind: str) -> dict[str, Any]:
    """Return the server's version and durability settings and this machine's."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = _scalar(conn, "SHOW server_version")
        settings = {
            name: _scalar(conn, f"SHOW {name}")
            for name in ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers")
        }
    return {
        "postgresql": version,
        "server": kind,
        **settings,
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python_loop_seconds": python_loop_seconds(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "relay_actors": _version("relay-actors"),
        "psycopg": _version("psycopg"),
        "pykka": _version("pykka"),
        "executable": sys.executable,
    }


def _cpu_model() -> str | None:
    """Return the first processor's model name from /proc/cpuinfo, or None off Linux."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                name, _, value = line.partition(":")
                if name.strip() == "model name":
                    return value.strip()
    except OSError:
        return None
    return None


LOOP_ADDITIONS = 10_000_000


def python_loop_seconds() -> float:
    """Return the best of 3 timings of a pure-Python loop of 10 million additions.

    relay_actors spends most of its CPU in Python and the floor in PostgreSQL
    and the kernel, so the ratios depend on how fast this machine runs Python
    code. This figure lets readers compare machines on that.
    """
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for number in range(LOOP_ADDITIONS):
            total += number
        timings.append(time.perf_counter() - started)
    return min(timings)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def wal_counters(dsn: str) -> dict[str, int] | None:
    """Return the cluster's WAL syncs, writes and bytes so far, or None before PostgreSQL 14.

    PostgreSQL 14 to 17 count syncs and writes in pg_stat_wal; 18 moved them to
    pg_stat_io (object 'wal'). The counters cover every database of the server.
    """
    with psycopg.connect(dsn, autocommit=True) as conn:
        version = int(_scalar(conn, "SHOW server_version_num"))
        if version < 140000:
            return None
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute("SELECT wal_records, wal_bytes FROM pg_stat_wal").fetchone()
        assert row is not None
        counters = {"records": int(row[0]), "bytes": int(row[1])}
        if version >= 180000:
            row = conn.execute(
                "SELECT coalesce(sum(fsyncs), 0), coalesce(sum(writes), 0) FROM pg_stat_io "
                "WHERE object = 'wal' AND context = 'normal'"
            ).fetchone()
        else:
            row = conn.execute("SELECT wal_sync, wal_write FROM pg_stat_wal").fetchone()
        assert row is not None
        counters.update(syncs=int(row[0]), writes=int(row[1]))
    return counters


def wal_per_job(
    before: dict[str, int] | None, after: dict[str, int] | None, jobs: int
) -> dict[str, float] | None:
    """Return the WAL syncs, writes and bytes per job between two `wal_counters` readings."""
    if before is None or after is None:
        return None
    return {f"{name}_per_job": (after[name] - before[name]) / jobs for name in before}


def wait_for_backends_to_exit(dsn: str, patterns: Sequence[str]) -> None:
    """Wait until no backend's application_name matches a LIKE pattern, then a WAL writer round.

    A backend reports its pending statistics when it exits, so WAL counters
    read after this include all the work of the closed connections.
    """
    deadline = time.monotonic() + BACKEND_EXIT_TIMEOUT_SECONDS
    with psycopg.connect(dsn, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE ANY(%s)",
                (list(patterns),),
            ).fetchone()
            if row is None or row[0] == 0:
                break
            if time.monotonic() > deadline:
                logger.warning(
                    "%d benchmark connections still open after %.0f s; WAL counts may be low",
                    row[0],
                    BACKEND_EXIT_TIMEOUT_SECONDS,
                )
                break
            time.sleep(0.05)
    time.sleep(WAL_WRITER_REPORT_SECONDS)
