"""A producer's claim hands out its jobs in the claim's order, whatever order the server returns."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from relay_actors import Job
from relay_actors.actors.queue_rows import QueueRows
from relay_actors.inserting import execute_insert
from relay_actors.store.migrations import migrate
from relay_actors.store.statements import statements_for

NODE = "claim-order-test"
QUEUE = "claim_order"
# One job of each priority, 0 to 9.
JOBS = 10


@pytest.fixture
def queue_rows(database_dsn: str, prefix: str) -> Iterator[QueueRows]:
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        migrate(conn, prefix)
    rows = QueueRows(
        dsn=database_dsn,
        prefix=prefix,
        queue=QUEUE,
        node_id=NODE,
        relaxed_claims=False,
        secret=None,
    )
    yield rows
    rows.close()


def test_claim_returns_priority_order(
    queue_rows: QueueRows, database_dsn: str, prefix: str
) -> None:
    """Jobs inserted with falling priorities come back lowest priority number first."""
    jobs = [Job(worker="w", args={}, queue=QUEUE, priority=JOBS - 1 - n) for n in range(JOBS)]
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        metas = [{"relay": {"ref": str(uuid.uuid4())}} for _ in jobs]
        execute_insert(statements_for(prefix), "unused", conn, jobs, metas)

    rows = queue_rows.write_and_claim([], JOBS // 2)

    priorities: list[Any] = [row[8] for row in rows]
    assert priorities == list(range(JOBS // 2))
    ids = [row[0] for row in rows]
    assert ids == sorted(ids, reverse=True)
