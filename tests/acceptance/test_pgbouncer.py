"""A worker node and a caller connected through PgBouncer in transaction pooling mode."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

from relay_actors import Instance, Ok, Relay
from tests.acceptance.test_worker_nodes import node_id_of
from tests.conftest import NodeProcess
from tests.pgbouncer import POOL_SIZE, Bouncer, binary_path, run_bouncer
from tests.workers import QUICK_QUEUE, Double, Flaky

pytestmark = pytest.mark.skipif(
    binary_path() is None,
    reason="the pgbouncer binary is not installed; run apt-get install -y pgbouncer",
)

RESULT_TIMEOUT = 20.0
# More runs of one statement than psycopg's default prepare_threshold (5), so
# a prepared statement would be created and then missed on another server
# connection if the option did not turn preparing off.
REPEATS = 12


@pytest.fixture
def bouncer(database_dsn: str) -> Iterator[Bouncer]:
    yield from run_bouncer(database_dsn)


def admin_rows(bouncer: Bouncer, command: str) -> list[dict[str, Any]]:
    """Return the rows of a PgBouncer admin console command such as SHOW CLIENTS."""
    with psycopg.connect(bouncer.admin_dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(command).fetchall()


def test_node_and_caller_through_pgbouncer(
    bouncer: Bouncer,
    database_dsn: str,
    prefix: str,
    start_node: Callable[..., NodeProcess],
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
) -> None:
    node = start_node(
        {QUICK_QUEUE: 3},
        dsn=bouncer.dsn,
        options=["--pgbouncer", "--listen-dsn", database_dsn, "--relaxed-claims"],
    )
    caller = start_instance(queues={}, dsn=bouncer.dsn, pgbouncer=True, listen_dsn=database_dsn)

    relays = Relay.async_many(caller.name, [Double.new({"int": i}) for i in range(REPEATS)])
    relays += [Relay.async_(caller.name, Double.new({"int": i})) for i in range(REPEATS)]
    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)
    assert results == [Ok(2 * i) for i in range(REPEATS)] * 2

    retried = Relay.async_(caller.name, Flaky.new({"succeed_on": 2}))
    result = Relay.await_(retried, timeout=RESULT_TIMEOUT, with_retries=True)
    assert result == Ok("succeeded")
    attempt = db.execute(
        sql.SQL("SELECT attempt FROM {} WHERE id = %s").format(sql.Identifier(prefix, "jobs")),
        (retried.job.id,),
    ).fetchone()
    assert attempt == (2,)

    # Every connection but the listeners' reached PostgreSQL through PgBouncer.
    database = str(psycopg.conninfo.conninfo_to_dict(database_dsn)["dbname"])
    clients = [row for row in admin_rows(bouncer, "SHOW CLIENTS") if row["database"] == database]
    node_id = node_id_of(node)
    names = {row["application_name"] for row in clients}
    assert f"relay_actors producer {QUICK_QUEUE} {node_id}" in names
    assert f"relay_actors caller {caller.node_id}" in names
    assert not any(name.startswith("relay_actors listener") for name in names)
    assert len(clients) > POOL_SIZE
    stats = [row for row in admin_rows(bouncer, "SHOW STATS") if row["database"] == database]
    assert stats[0]["total_xact_count"] >= 3 * REPEATS

    backends = db.execute(
        "SELECT application_name FROM pg_stat_activity WHERE datname = %s "
        "AND application_name LIKE 'relay_actors %%'",
        (database,),
    ).fetchall()
    listeners = sorted(name for (name,) in backends if name.startswith("relay_actors listener"))
    assert listeners == sorted(
        [f"relay_actors listener {node_id}", f"relay_actors listener {caller.node_id}"]
    )
    # The node and the caller have more clients than PgBouncer has server
    # connections, so the others share at most POOL_SIZE backends.
    assert len(backends) - len(listeners) <= POOL_SIZE

    # Relaxed claims set synchronous_commit per transaction only: no server
    # connection that PgBouncer hands out keeps it off.
    with ExitStack() as stack:
        settings = []
        for _ in range(POOL_SIZE):
            conn = stack.enter_context(psycopg.connect(bouncer.dsn, prepare_threshold=None))
            row = conn.execute("SHOW synchronous_commit").fetchone()
            settings.append(row[0] if row else None)
    assert settings == ["on"] * POOL_SIZE


def test_session_options_rejected_without_flag(
    bouncer: Bouncer, start_instance: Callable[..., Instance]
) -> None:
    with pytest.raises(psycopg.OperationalError, match="unsupported startup parameter"):
        start_instance(dsn=bouncer.dsn, queues={})
