"""Relaxed outcomes: the producer's one connection commits without waiting for the WAL flush."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from relay_actors import ConfigurationError
from relay_actors.actors.queue_rows import QueueRows
from relay_actors.options import Options
from relay_actors.store.migrations import migrate
from tests.workers import QUICK_QUEUE, SLOW_QUEUE

RESULT_TIMEOUT = 10.0


@pytest.fixture
def queue_rows(database_dsn: str, prefix: str) -> Iterator[Callable[..., QueueRows]]:
    """Factory of `QueueRows` on a migrated test schema; each is closed after the test."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        migrate(conn, prefix)
    created: list[QueueRows] = []

    def make(*, relaxed_claims: bool, relaxed_outcomes: bool) -> QueueRows:
        rows = QueueRows(
            dsn=database_dsn,
            prefix=prefix,
            queue=QUICK_QUEUE,
            node_id="relaxed-test",
            relaxed_claims=relaxed_claims,
            relaxed_outcomes=relaxed_outcomes,
            secret=None,
        )
        created.append(rows)
        return rows

    yield make
    for rows in created:
        rows.close()


def synchronous_commit(rows: QueueRows) -> str:
    """Return the setting of the connection that records outcomes."""
    row = rows._connection().execute("SHOW synchronous_commit").fetchone()
    assert row is not None
    return str(row[0])


def test_relaxed_outcomes_skip_flush_wait(
    queue_rows: Callable[..., QueueRows],
) -> None:
    rows = queue_rows(relaxed_claims=False, relaxed_outcomes=True)

    assert rows.write_and_claim([], 1) == []

    assert synchronous_commit(rows) == "off"
    # Claims run on the same connection, so no claims connection opens.
    assert rows._claim_conn is None
    # A new connection, as after a failed statement, gets the setting too.
    rows.close()
    assert rows.write_and_claim([], 1) == []
    assert synchronous_commit(rows) == "off"


def test_relaxed_claims_alone_keep_outcomes_durable(
    queue_rows: Callable[..., QueueRows],
) -> None:
    rows = queue_rows(relaxed_claims=True, relaxed_outcomes=False)

    assert rows.write_and_claim([], 1) == []

    assert synchronous_commit(rows) == "on"
    assert rows._claim_conn is not None


def test_max_connections_with_relaxed_outcomes() -> None:
    queues = {QUICK_QUEUE: 4, SLOW_QUEUE: 8}
    durable = Options(queues=queues, pool_size=3).max_connections
    assert Options(queues=queues, pool_size=3, relaxed_outcomes=True).max_connections == durable
    both = Options(queues=queues, pool_size=3, relaxed_claims=True, relaxed_outcomes=True)
    assert both.max_connections == durable


@pytest.mark.parametrize("value", [1, "yes", None])
def test_relaxed_outcomes_must_be_a_bool(value: object) -> None:
    with pytest.raises(ConfigurationError, match=rf"invalid relaxed_outcomes {value!r}"):
        Options(queues={}, relaxed_outcomes=value)  # type: ignore[arg-type]


def test_relaxed_outcomes_rejected_with_pgbouncer() -> None:
    expected = r"relaxed_outcomes=True \(--relaxed-outcomes\) does not work"
    with pytest.raises(ConfigurationError, match=expected):
        Options(queues={}, relaxed_outcomes=True, pgbouncer=True, listen_dsn="host=x")
