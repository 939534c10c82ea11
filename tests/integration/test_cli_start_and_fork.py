"""The command line's errors at start, and instances used in a forked child process."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

import relay_actors
from relay_actors import Instance, Ok, Relay
from tests.conftest import REPO_ROOT
from tests.workers import Double

# Seconds a command gets to fail at start, although each of these fails in under one.
COMMAND_TIMEOUT = 60.0
# Seconds a forked child gets for its work, which takes well under one.
CHILD_TIMEOUT = 15.0
RESULT_TIMEOUT = 10.0


def run_command(
    arguments: list[str], cwd: Path = REPO_ROOT, unset: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run `python -m relay_actors` with `arguments`, without the variables `unset`."""
    environment = {name: value for name, value in os.environ.items() if name not in unset}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), *filter(None, [environment.get("PYTHONPATH")])]
    )
    return subprocess.run(
        [sys.executable, "-m", "relay_actors", *arguments],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def test_worker_unreachable_listen_dsn(database_dsn: str, prefix: str) -> None:
    missing = make_conninfo(database_dsn, dbname=f"relay_actors_missing_{secrets.token_hex(4)}")
    finished = run_command(
        [
            "worker",
            "--dsn",
            database_dsn,
            "--listen-dsn",
            missing,
            "--prefix",
            prefix,
            "--queue",
            "q=1",
        ]
    )

    assert finished.returncode == 1, finished.stderr
    assert "cannot start the node" in finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize("command", ["worker", "migrate", "status"])
def test_malformed_dsn_is_invalid_option(command: str) -> None:
    arguments = [command, "--dsn", "not a dsn"]
    if command == "worker":
        arguments += ["--queue", "q=1"]

    finished = run_command(arguments)

    assert finished.returncode == 2, finished.stderr
    assert "Traceback" not in finished.stderr


@pytest.mark.parametrize("command", ["worker", "migrate", "status"])
def test_missing_dsn_names_the_option(command: str) -> None:
    arguments = [command]
    if command == "worker":
        arguments += ["--queue", "q=1"]

    finished = run_command(arguments, unset=("RELAY_ACTORS_DSN", "DATABASE_URL"))

    assert finished.returncode == 2, finished.stderr
    assert "pass --dsn" in finished.stderr
    assert "Traceback" not in finished.stderr


def test_worker_module_syntax_error(database_dsn: str, tmp_path: Path) -> None:
    (tmp_path / "broken_workers.py").write_text("def perform(:\n")

    finished = run_command(
        ["worker", "--dsn", database_dsn, "--queue", "q=1", "--module", "broken_workers"],
        cwd=tmp_path,
    )

    assert finished.returncode == 2, finished.stderr
    assert "broken_workers" in finished.stderr


def run_in_child(work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Fork, run `work` in the child and return the dict it returned, as JSON through a pipe.

    Fails the test if the child has not exited within CHILD_TIMEOUT, and kills it.
    """
    reader, writer = os.pipe()
    with warnings.catch_warnings():
        # Python 3.12 warns about fork() in a process with threads.
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(reader)
            os.write(writer, json.dumps(work()).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(writer)
    deadline = time.monotonic() + CHILD_TIMEOUT
    pause = threading.Event()
    status = None
    while status is None and time.monotonic() < deadline:
        finished_pid, exit_status = os.waitpid(pid, os.WNOHANG)
        if finished_pid == pid:
            status = exit_status
        else:
            pause.wait(0.05)
    if status is None:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(reader)
        pytest.fail(f"the forked child did not finish within {CHILD_TIMEOUT:.0f} s")
    with os.fdopen(reader) as pipe:
        text = pipe.read()
    assert os.waitstatus_to_exitcode(status) == 0, f"the child failed; it wrote {text!r}"
    report: dict[str, Any] = json.loads(text)
    return report


def test_forked_child_starts_same_name(
    start_instance: Callable[..., Instance], database_dsn: str, prefix: str
) -> None:
    parent = start_instance(queues={})

    def start_again() -> dict[str, Any]:
        try:
            Relay.async_(parent.name, Double.new({"int": 1}))
        except relay_actors.InstanceForkedError:
            rejected = True
        else:
            rejected = False
        try:
            child = relay_actors.start(
                name=parent.name, dsn=database_dsn, prefix=prefix, queues={}, plugins=[Relay]
            )
        except Exception as error:  # noqa: BLE001 - reported to the parent
            return {"rejected": rejected, "started": f"{type(error).__name__}: {error}"}
        child.stop(grace=0)
        return {"rejected": rejected, "started": "ok"}

    report = run_in_child(start_again)

    assert report["rejected"] is True
    assert report["started"] == "ok"


def test_forked_child_stop_leaves_parent(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    parent = start_instance(shutdown_grace=1.0)

    def stop_in_child() -> dict[str, Any]:
        try:
            parent.stop()
        except relay_actors.InstanceForkedError:
            return {"stop": "InstanceForkedError"}
        return {"stop": "returned"}

    report = run_in_child(stop_in_child)

    assert report["stop"] == "InstanceForkedError"
    query = sql.SQL("SELECT count(*) FROM {} WHERE node_id = %s").format(
        sql.Identifier(prefix, "nodes")
    )
    row = db.execute(query, (parent.node_id,)).fetchone()
    assert row == (1,), "the child deleted the parent's node row"
    relay = Relay.async_(parent.name, Double.new({"int": 3}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(6)


def test_worker_missing_module(database_dsn: str, tmp_path: Path) -> None:
    finished = run_command(
        ["worker", "--dsn", database_dsn, "--queue", "q=1", "--module", "no_such_workers"],
        cwd=tmp_path,
    )

    assert finished.returncode == 2, finished.stderr
    assert "cannot import worker module no_such_workers" in finished.stderr
    assert "Traceback" not in finished.stderr
