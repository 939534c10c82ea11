"""Connections one node opens, counted in pg_stat_activity by application_name."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from relay_actors import ConfigurationError, Instance, Ok, Relay
from relay_actors.options import Options
from tests.conftest import wait_until
from tests.workers import QUICK_QUEUE, SLOW_QUEUE, Double, Sleep

RESULT_TIMEOUT = 10.0
OPEN_TIMEOUT = 10.0
CALLER_THREADS = 3


def connections_by_role(db: psycopg.Connection[Any], node_id: str) -> Counter[str]:
    """Count the node's connections per role, from names like `relay_actors producer quick node`."""
    rows = db.execute(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"relay_actors % {node_id}",),
    ).fetchall()
    suffix = f" {node_id}"
    return Counter(str(name)[len("relay_actors ") : -len(suffix)] for (name,) in rows)


@pytest.mark.parametrize(
    ("queues", "pool_size", "expected"),
    [
        ({}, 10, 14),
        ({QUICK_QUEUE: 4}, 10, 17),
        ({QUICK_QUEUE: 4, SLOW_QUEUE: 8}, 3, 11),
    ],
)
def test_max_connections_formula(queues: dict[str, int], pool_size: int, expected: int) -> None:
    assert Options(queues=queues, pool_size=pool_size).max_connections == expected


def test_max_connections_relaxed_claims() -> None:
    queues = {QUICK_QUEUE: 4, SLOW_QUEUE: 8}
    assert Options(queues=queues, pool_size=3, relaxed_claims=True).max_connections == 13
    pooled = Options(
        queues=queues, pool_size=3, relaxed_claims=True, pgbouncer=True, listen_dsn="x"
    )
    assert pooled.max_connections == 11


@pytest.mark.parametrize(("relaxed_outcomes", "claims_connections"), [(False, 1), (True, 0)])
def test_relaxed_claims_connections(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    relaxed_outcomes: bool,
    claims_connections: int,
) -> None:
    instance = start_instance(
        queues={QUICK_QUEUE: 2},
        pool_size=2,
        relaxed_claims=True,
        relaxed_outcomes=relaxed_outcomes,
    )
    relays = [Relay.async_(instance.name, Double.new({"int": value})) for value in range(5)]

    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)

    assert results == [Ok(2 * value) for value in range(5)]
    # The producer records the outcomes on its durable connection, and the
    # claims that record nothing commit on its second one. With relaxed
    # outcomes, claims and outcomes share the one connection.
    assert instance.statistics()[f"producer {QUICK_QUEUE}"]["recorded"] == 5
    roles = connections_by_role(db, instance.node_id)
    assert roles[f"producer {QUICK_QUEUE}"] == 1
    assert roles[f"producer {QUICK_QUEUE} claims"] == claims_connections
    assert sum(roles.values()) <= instance.options.max_connections


def test_node_connections_match_formula(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any]
) -> None:
    queues = {QUICK_QUEUE: 4, SLOW_QUEUE: 8}
    instance = start_instance(queues=queues, pool_size=4)
    # Caller threads that insert and await at the same time take several
    # pooled connections. Producers record their executors' outcomes, so the
    # acker connects only when it records one itself (a rescue, a release at
    # stop, or a producer's failed write): it counts in the formula as a
    # connection the node may open.
    barrier = threading.Barrier(CALLER_THREADS)
    results: list[Any] = []

    def call(value: int) -> None:
        barrier.wait()
        slow = Relay.async_(instance.name, Sleep.new({"seconds": 0.2, "value": value}))
        quick = Relay.async_(instance.name, Double.new({"int": value}))
        results.extend(Relay.await_many([slow, quick], timeout=RESULT_TIMEOUT))

    threads = [threading.Thread(target=call, args=(value,)) for value in range(CALLER_THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(result.value for result in results if isinstance(result, Ok)) == sorted(
        [*range(CALLER_THREADS), *(2 * value for value in range(CALLER_THREADS))]
    )

    actor_roles = {
        "listener": 1,
        "poller": 1,
        "lifeline": 1,
        "stager": 1,
        "pruner": 1,
        f"producer {QUICK_QUEUE}": 1,
        f"producer {SLOW_QUEUE}": 1,
    }
    wait_until(
        lambda: all(
            connections_by_role(db, instance.node_id)[role] == count
            for role, count in actor_roles.items()
        ),
        timeout=OPEN_TIMEOUT,
        message=lambda: f"connections: {connections_by_role(db, instance.node_id)}",
    )
    roles = connections_by_role(db, instance.node_id)
    pooled = instance.pool.statistics()["open"]
    assert roles["caller"] == pooled
    assert 1 <= pooled <= 4
    assert roles["acker"] <= 1
    assert set(roles) <= {*actor_roles, "acker", "caller"}
    assert sum(roles.values()) == len(actor_roles) + roles["acker"] + pooled
    assert sum(roles.values()) <= instance.options.max_connections
    assert instance.options.max_connections == len(actor_roles) + 1 + 4


def test_stopped_node_closes_connections(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any]
) -> None:
    instance = start_instance(queues={QUICK_QUEUE: 2})
    assert Relay.await_(Relay.async_(instance.name, Double.new({"int": 1}))) == Ok(2)
    instance.stop()
    wait_until(
        lambda: not connections_by_role(db, instance.node_id),
        timeout=OPEN_TIMEOUT,
        message=lambda: f"still open: {connections_by_role(db, instance.node_id)}",
    )


def test_pgbouncer_needs_listen_dsn() -> None:
    with pytest.raises(ConfigurationError, match="pgbouncer=True needs listen_dsn"):
        Options(queues={}, pgbouncer=True)
