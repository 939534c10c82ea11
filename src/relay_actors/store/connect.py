"""Opening connections: DSN resolution and per-role connection settings."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg.conninfo import conninfo_to_dict

from relay_actors.errors import ConfigurationError, RelayError

logger = logging.getLogger("relay_actors.store")

DSN_VARIABLES = ("RELAY_ACTORS_DSN", "DATABASE_URL")
EMBEDDED = "embedded"
CONNECT_TIMEOUT_SECONDS = 10
STATEMENT_TIMEOUT_MS = 30_000

# TCP keepalives and tcp_user_timeout detect a peer that vanished without
# closing the socket (a half-open connection) within about 30 s, so the
# listener reconnects instead of waiting for notifications that never come.
_TCP_SETTINGS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}


def resolve_dsn(dsn: str | None) -> str:
    """Return the DSN to use: `dsn`, else $RELAY_ACTORS_DSN, else $DATABASE_URL.

    "embedded" is returned as is; the caller starts a private server for it.
    """
    if dsn:
        return dsn
    for variable in DSN_VARIABLES:
        value = os.environ.get(variable)
        if value:
            return value
    raise ConfigurationError(
        "no database given: pass dsn='postgresql://...' to start(), or set RELAY_ACTORS_DSN "
        "or DATABASE_URL; dsn='embedded' starts a private PostgreSQL server for this process"
    )


class PooledDsn(str):
    """A DSN that leads to PgBouncer in transaction pooling mode.

    Each transaction may run on another server connection, which other
    clients share, so `connect()` gives such connections no session state:
    no server-side prepared statements and no `options` startup parameter,
    which PgBouncer rejects unless `ignore_startup_parameters` lists it.
    The type travels with the DSN into every actor that opens connections.
    """

    __slots__ = ()


def server_address(dsn: str) -> str:
    """Return host, port and database of `dsn`, without its password, for messages."""
    try:
        parts = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "the given DSN"
    host = parts.get("host") or "localhost"
    port = parts.get("port") or 5432
    return f"{host}:{port}/{parts.get('dbname') or parts.get('user') or ''}"


def is_pooled(dsn: str) -> bool:
    """Tell whether connections to `dsn` go through PgBouncer in transaction pooling mode."""
    return isinstance(dsn, PooledDsn)


def connect(dsn: str, role: str, node_id: str) -> psycopg.Connection[tuple[object, ...]]:
    """Open an autocommit connection named after its role and node in pg_stat_activity.

    A direct connection sets statement_timeout for its session. A connection
    to a `PooledDsn` cannot, so it gets the timeout of the server's role or
    database settings, and psycopg prepares no statements on it.
    """
    application_name = f"relay_actors {role} {node_id}"[:63]
    params: dict[str, object] = {
        "autocommit": True,
        "application_name": application_name,
        "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    }
    if is_pooled(dsn):
        params["prepare_threshold"] = None
    else:
        params["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
    if not _is_unix_socket(dsn):
        params.update(_TCP_SETTINGS)
    return psycopg.connect(dsn, **params)  # type: ignore[arg-type]


def warn_without_statement_timeout(
    conn: psycopg.Connection[tuple[object, ...]], node_id: str
) -> None:
    """Log a warning if a pooled connection runs statements without a statement_timeout.

    Through PgBouncer the node cannot set the timeout per session, and
    without one a claim or a write that waits on a lock can block its actor
    for as long as the lock is held.
    """
    row = conn.execute("SHOW statement_timeout").fetchone()
    if row is not None and row[0] == "0":
        logger.warning(
            "node %s connects through PgBouncer and the server's statement_timeout is 0, so "
            "its statements never time out; set one for the role, for example ALTER ROLE "
            "name SET statement_timeout = '30s'",
            node_id,
            extra={"action": "no_statement_timeout", "node": node_id},
        )


def _is_unix_socket(dsn: str) -> bool:
    host = conninfo_to_dict(dsn).get("host")
    return isinstance(host, str) and host.startswith("/")


def _is_usable(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """Tell whether an idle connection is still open.

    An idle connection has nothing to read unless the server closed it, for
    example with a termination message when it restarted. A zero-timeout poll
    finds that without a round trip.
    """
    if conn.closed or conn.broken:
        return False
    try:
        readable, _, _ = select.select([conn.fileno()], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable


class PoolTimeout(RelayError, TimeoutError):
    """No pooled connection became free in time."""


class ConnectionPool:
    """A small thread-safe pool of autocommit connections for caller threads.

    Connections open lazily up to `max_size`. A connection returned broken, or
    inside a transaction, is closed instead of reused, and an idle connection
    that the server closed is replaced when it is taken.
    """

    def __init__(self, dsn: str, node_id: str, *, max_size: int = 10) -> None:
        if max_size < 1:
            raise ConfigurationError(f"invalid pool size {max_size!r}: give an int >= 1")
        self._dsn = dsn
        self._node_id = node_id
        self._max_size = max_size
        self._idle: list[psycopg.Connection[tuple[object, ...]]] = []
        self._condition = threading.Condition()
        self._opened = 0
        self._closed = False

    @contextmanager
    def connection(self, timeout: float = 30.0) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        """Lend a connection for the block, waiting at most `timeout` seconds for one."""
        conn = self._acquire(timeout)
        try:
            yield conn
        finally:
            self._release(conn)

    def _acquire(self, timeout: float) -> psycopg.Connection[tuple[object, ...]]:
        deadline = time.monotonic() + timeout
        with self._condition:
            while True:
                if self._closed:
                    raise RelayError(
                        "the instance's connection pool is closed: the instance was stopped"
                    )
                while self._idle:
                    conn = self._idle.pop()
                    if _is_usable(conn):
                        return conn
                    conn.close()
                    self._opened -= 1
                if self._opened < self._max_size:
                    self._opened += 1
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PoolTimeout(
                        f"no database connection free after {timeout:.1f} s; all "
                        f"{self._max_size} are in use, so raise pool_size in start()"
                    )
                self._condition.wait(remaining)
        try:
            return connect(self._dsn, "caller", self._node_id)
        except BaseException:
            with self._condition:
                self._opened -= 1
                self._condition.notify()
            raise

    def _release(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        reusable = (
            not conn.closed
            and not conn.broken
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        )
        with self._condition:
            if reusable and not self._closed:
                self._idle.append(conn)
            else:
                conn.close()
                self._opened -= 1
            self._condition.notify()

    def statistics(self) -> dict[str, int]:
        """Return the connections open (idle or lent), idle, and the maximum."""
        with self._condition:
            return {"open": self._opened, "idle": len(self._idle), "max_size": self._max_size}

    def close(self) -> None:
        """Close every idle connection; connections in use close when released."""
        with self._condition:
            self._closed = True
            while self._idle:
                self._idle.pop().close()
                self._opened -= 1
            self._condition.notify_all()
