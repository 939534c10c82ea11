"""`relay-actors status` run as a separate process against a worker node and a caller."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from relay_actors import Instance, Ok, Relay
from relay_actors.status import STATES
from tests.conftest import REPO_ROOT, NodeProcess, wait_until
from tests.workers import QUICK_QUEUE, Echo

# A queue that no node runs, so its jobs stay available.
IDLE_QUEUE = "reports"
RESULT_TIMEOUT = 20.0
COMMAND_TIMEOUT = 30.0
HEARTBEAT_TIMEOUT = 15.0


def run_status(database_dsn: str, prefix: str, *options: str) -> subprocess.CompletedProcess[str]:
    environment = dict(os.environ)
    environment.pop("RELAY_ACTORS_DSN", None)
    command = [sys.executable, "-m", "relay_actors", "status", "--dsn", database_dsn]
    return subprocess.run(
        [*command, "--prefix", prefix, *options],
        cwd=REPO_ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def node_statistics(db: psycopg.Connection[Any], prefix: str, name: str) -> dict[str, Any]:
    query = sql.SQL("SELECT statistics FROM {} WHERE name = %s").format(
        sql.Identifier(prefix, "nodes")
    )
    row = db.execute(query, (name,)).fetchone()
    return row[0] if row else {}


def test_status_shows_queues_and_nodes(
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    database_dsn: str,
    prefix: str,
    db: psycopg.Connection[Any],
) -> None:
    start_node({QUICK_QUEUE: 3}, node="status-worker", options=["--heartbeat-interval", "0.5"])
    caller = start_instance(queues={}, node="status-caller", heartbeat_interval=0.5)
    done = [Relay.async_(caller.name, Echo.new({"value": i})) for i in range(4)]
    assert Relay.await_many(done, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(4)]
    Relay.async_many(caller.name, [Echo.new({"value": i}, queue=IDLE_QUEUE) for i in range(2)])

    wait_until(
        lambda: node_statistics(db, prefix, "status-caller").get("pending_relays") == 2,
        timeout=HEARTBEAT_TIMEOUT,
        message=lambda: f"caller heartbeat: {node_statistics(db, prefix, 'status-caller')}",
    )
    wait_until(
        lambda: (
            node_statistics(db, prefix, "status-worker").get("queues")
            == {QUICK_QUEUE: {"executors": 3, "busy": 0}}
        ),
        timeout=HEARTBEAT_TIMEOUT,
        message=lambda: f"worker heartbeat: {node_statistics(db, prefix, 'status-worker')}",
    )

    completed = run_status(database_dsn, prefix, "--json")
    assert completed.returncode == 0, completed.stderr
    document = json.loads(completed.stdout)
    assert document["schema"] == prefix
    assert set(document["queues"]) == {QUICK_QUEUE, IDLE_QUEUE}
    assert document["queues"][QUICK_QUEUE] == dict.fromkeys(STATES, 0) | {"completed": 4}
    assert document["queues"][IDLE_QUEUE] == dict.fromkeys(STATES, 0) | {"available": 2}

    nodes = {node["name"]: node for node in document["nodes"]}
    assert set(nodes) == {"status-worker", "status-caller"}
    worker = nodes["status-worker"]
    assert worker["queues"] == {QUICK_QUEUE: 3}
    assert worker["executors"] == {QUICK_QUEUE: {"busy": 0, "total": 3}}
    assert worker["pending_relays"] == 0
    assert 0 <= worker["heartbeat_age_seconds"] < HEARTBEAT_TIMEOUT
    caller_entry = nodes["status-caller"]
    assert caller_entry["node_id"] == caller.node_id
    assert caller_entry["queues"] == {}
    assert caller_entry["executors"] == {}
    assert caller_entry["pending_relays"] == 2

    text = run_status(database_dsn, prefix)
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0] == f"schema {prefix}"
    rows = {line.split()[0]: line.split() for line in lines if line.split()}
    assert rows[QUICK_QUEUE] == [QUICK_QUEUE, "0", "0", "0", "0", "4", "0", "0"]
    assert rows[IDLE_QUEUE] == [IDLE_QUEUE, "2", "0", "0", "0", "0", "0", "0"]
    caller_row = rows[caller.node_id]
    assert caller_row[1:4] == ["status-caller", "-", "2"]
    worker_row = next(row for row in rows.values() if row[1:2] == ["status-worker"])
    assert worker_row[2:4] == [f"{QUICK_QUEUE}=0/3", "0"]


def test_status_of_unmigrated_schema(database_dsn: str, prefix: str) -> None:
    completed = run_status(database_dsn, prefix)
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert f"schema {prefix!r} has no relay_actors tables" in completed.stderr
    assert f"relay-actors migrate --prefix {prefix}" in completed.stderr
