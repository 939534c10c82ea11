"""Worker nodes in separate OS processes, awaited by a caller in the test process.

Each node runs `python -m relay_actors worker`, started by the `start_node`
fixture, on the test's schema.
"""

from __future__ import annotations

import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from relay_actors import Error, Instance, JobError, Ok, Relay
from tests.conftest import NodeProcess, wait_until
from tests.workers import QUICK_QUEUE, SLOW_QUEUE, Echo, Fail, Sleep

# Seconds for a result from another process, which may still be warming up.
RESULT_TIMEOUT = 20.0
# Seconds for the server to drop the connections of a process that exited.
CLEANUP_TIMEOUT = 5.0


def node_id_of(node: NodeProcess) -> str:
    """Return the node id that the process printed in its ready line."""
    match = re.search(r"node=(\S+)", node.ready_line)
    assert match is not None, f"ready line {node.ready_line!r} names no node id"
    return match.group(1)


def test_caller_awaits_remote_result(
    start_instance: Callable[..., Instance], start_node: Callable[..., NodeProcess]
) -> None:
    node = start_node({QUICK_QUEUE: 2}, node="remote")
    caller = start_instance(queues={})
    relay = Relay.async_(caller.name, Echo.new({"value": {"from": "another process"}}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok({"from": "another process"})
    assert node.process.poll() is None


def test_node_with_relaxed_outcomes_answers(
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    node = start_node({QUICK_QUEUE: 2}, node="relaxed", options=["--relaxed-outcomes"])
    caller = start_instance(queues={})
    relays = [Relay.async_(caller.name, Echo.new({"value": i})) for i in range(5)]

    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(5)]
    assert node.process.poll() is None
    ids = [relay.job.id for relay in relays]
    states = db.execute(
        sql.SQL("SELECT state FROM {} WHERE id = ANY(%s)").format(sql.Identifier(prefix, "jobs")),
        (ids,),
    ).fetchall()
    assert states == [("completed",)] * 5
    assert "claims and outcomes commit without waiting for the WAL flush" in node.stderr()


def test_caller_gets_remote_exception(
    start_instance: Callable[..., Instance], start_node: Callable[..., NodeProcess]
) -> None:
    node = start_node({QUICK_QUEUE: 2}, node="remote")
    caller = start_instance(queues={})
    relay = Relay.async_(caller.name, Fail.new({"message": "remote failure"}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)

    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "builtins.ValueError"
    assert result.reason.message == "remote failure"
    assert result.reason.attempt == 1
    assert result.reason.node == node_id_of(node)
    assert result.reason.node != caller.node_id


def test_shared_queue_runs_once(
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    first = start_node({SLOW_QUEUE: 2}, node="worker-a")
    second = start_node({SLOW_QUEUE: 2}, node="worker-b")
    caller = start_instance(queues={})
    count = 24
    relays = Relay.async_many(
        caller.name, [Sleep.new({"seconds": 0.1, "value": i}) for i in range(count)]
    )
    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)
    assert results == [Ok(i) for i in range(count)]

    rows = db.execute(
        sql.SQL("SELECT state, attempt, attempted_by FROM {}").format(
            sql.Identifier(prefix, "jobs")
        )
    ).fetchall()
    assert len(rows) == count
    assert {state for state, _, _ in rows} == {"completed"}
    assert {attempt for _, attempt, _ in rows} == {1}
    node_ids = {node_id_of(first), node_id_of(second)}
    assert {attempted_by for _, _, attempted_by in rows} == node_ids


def test_node_stops_on_sigterm(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node({QUICK_QUEUE: 1})
    assert node.terminate(signal.SIGTERM) == 0


def test_node_stops_on_sigint(start_node: Callable[..., NodeProcess]) -> None:
    node = start_node({QUICK_QUEUE: 1})
    assert node.terminate(signal.SIGINT) == 0


def test_stopped_node_closes_connections(
    start_node: Callable[..., NodeProcess], db: psycopg.Connection[Any]
) -> None:
    node = start_node({QUICK_QUEUE: 1})
    node_id = node_id_of(node)
    node.terminate(signal.SIGTERM)

    def connections() -> list[Any]:
        return db.execute(
            "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
            (f"relay_actors %{node_id}%",),
        ).fetchall()

    wait_until(
        lambda: not connections(),
        timeout=CLEANUP_TIMEOUT,
        message=lambda: f"connections left after the node exited: {connections()}",
    )


def test_unreachable_database_fails_cleanly(database_dsn: str) -> None:
    missing = make_conninfo(database_dsn, dbname=f"relay_actors_missing_{secrets.token_hex(4)}")
    command = [sys.executable, "-m", "relay_actors", "worker", "--dsn", missing, "--queue", "q=1"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 1
    assert "does not exist" in finished.stderr
    assert "cannot start the node" in finished.stderr
    assert "Traceback" not in finished.stderr
    assert "could not remove node" not in finished.stderr


@pytest.mark.parametrize(
    ("command", "purpose"),
    [(["migrate"], "cannot migrate the schema"), (["status"], "cannot read the status")],
)
def test_unreachable_database_other_commands(
    database_dsn: str, command: list[str], purpose: str
) -> None:
    missing = make_conninfo(database_dsn, dbname=f"relay_actors_missing_{secrets.token_hex(4)}")
    arguments = [sys.executable, "-m", "relay_actors", *command, "--dsn", missing]
    finished = subprocess.run(arguments, capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 1
    assert purpose in finished.stderr
    assert "does not exist" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_node_on_private_server_warns(start_node: Callable[..., NodeProcess]) -> None:
    """A worker given --dsn embedded runs, and warns that no other process reaches its server."""
    node = start_node({QUICK_QUEUE: 1}, dsn="embedded")

    assert node.terminate() == 0
    assert "--dsn embedded starts a private PostgreSQL server" in node.stderr()
