"""Fixtures shared by every tier: a PostgreSQL database, schemas, instances and node processes.

With $RELAY_ACTORS_TEST_DSN set, the session creates a fresh database on that
server and drops it at the end; otherwise it starts a private embedded server.
"""

from __future__ import annotations

import os
import queue
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import relay_actors
from relay_actors import Instance, Relay
from relay_actors.actors.producer import ProducerActor
from relay_actors.embedded import EmbeddedServer
from tests.workers import QUICK_QUEUE, SLOW_QUEUE

pytest.register_assert_rewrite("tests.assertions")

REPO_ROOT = Path(__file__).resolve().parents[1]
TEST_DSN_VARIABLE = "RELAY_ACTORS_TEST_DSN"

# Executors per queue of an in-process test instance. The slow queue has
# room for every Sleep job that one test starts at once.
DEFAULT_QUEUES = {QUICK_QUEUE: 4, SLOW_QUEUE: 8}
# Seconds that fixture teardown lets a running job finish before stop() leaves it running.
TEARDOWN_GRACE_SECONDS = 10.0
NODE_READY_SECONDS = 30.0
NODE_STOP_SECONDS = 15.0


def wait_until(
    condition: Callable[[], Any],
    *,
    timeout: float,
    message: str | Callable[[], str],
    interval: float = 0.05,
) -> Any:
    """Poll `condition` until it returns a true value, and return that value.

    Fails the test with `message` when `timeout` seconds pass first. `message`
    may be a callable, so it can describe the state at the deadline.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            pytest.fail(f"timed out after {timeout:.1f} s: {text}")
        pause.wait(interval)


def pytest_report_header() -> list[str]:
    """Return a header line that names the PostgreSQL server this test session uses."""
    base = os.environ.get(TEST_DSN_VARIABLE)
    if not base:
        return [
            f"PostgreSQL: a private embedded server started for this session "
            f"(set {TEST_DSN_VARIABLE} to test against your own server)"
        ]
    try:
        parts = conninfo_to_dict(base)
    except psycopg.ProgrammingError as error:
        return [f"PostgreSQL: {TEST_DSN_VARIABLE} is not a valid DSN: {error}"]
    location = ", ".join(
        f"{key}={parts[key]}" for key in ("host", "port", "user", "dbname") if parts.get(key)
    )
    return [
        f"PostgreSQL: the server of {TEST_DSN_VARIABLE} ({location or 'libpq defaults'}), "
        "in a database created for this session"
    ]


@pytest.fixture(scope="session")
def database_dsn() -> Iterator[str]:
    """DSN of a database that only this test session uses."""
    base = os.environ.get(TEST_DSN_VARIABLE)
    if not base:
        # The tests get a database of their own on the private server too, so
        # tests that alter the test database can run from its maintenance one.
        server = EmbeddedServer()
        try:
            yield from _own_database(server.dsn)
        finally:
            server.stop()
        return
    yield from _own_database(base)


def _own_database(base: str) -> Iterator[str]:
    """Create a database on the server of `base`, yield its DSN, then drop it."""
    name = f"relay_actors_test_{secrets.token_hex(6)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(base, dbname=name)
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def make_schema_name(database_dsn: str) -> Iterator[Callable[[], str]]:
    """Factory of unique schema names. Every schema of those names is dropped after the test."""
    names: list[str] = []

    def make() -> str:
        name = f"t_{secrets.token_hex(6)}"
        names.append(name)
        return name

    yield make
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def prefix(make_schema_name: Callable[[], str]) -> str:
    """A schema of this test alone, dropped after it."""
    return make_schema_name()


@pytest.fixture
def producer_messages(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every message that producers receive during the test, in arrival order."""
    messages: list[Any] = []
    on_receive = ProducerActor.on_receive

    def recording_receive(self: ProducerActor, message: Any) -> Any:
        # list.append is atomic in CPython, so producers of several queues may record.
        messages.append(message)
        return on_receive(self, message)

    monkeypatch.setattr(ProducerActor, "on_receive", recording_receive)
    return messages


@pytest.fixture
def db(database_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to the test database, for checking rows."""
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture
def start_instance(database_dsn: str, prefix: str) -> Iterator[Callable[..., Instance]]:
    """Factory that starts instances on the test schema and stops each of them after the test.

    Options default to the test database and schema, the Relay plugin, the
    test queues, a unique instance name and the node name "test". Any of them
    can be overridden.
    """
    started: list[Instance] = []

    def start(**options: Any) -> Instance:
        options.setdefault("dsn", database_dsn)
        options.setdefault("prefix", prefix)
        options.setdefault("plugins", [Relay])
        options.setdefault("queues", DEFAULT_QUEUES)
        options.setdefault("name", f"test-{secrets.token_hex(4)}")
        options.setdefault("node", "test")
        instance = relay_actors.start(**options)
        started.append(instance)
        return instance

    yield start
    for instance in reversed(started):
        instance.stop(grace=TEARDOWN_GRACE_SECONDS)


def count_jobs(conn: psycopg.Connection[Any], schema: str) -> int:
    """Return the number of rows in the jobs table of `schema`."""
    row = conn.execute(
        sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, "jobs"))
    ).fetchone()
    assert row is not None
    return int(row[0])


def job_state(conn: psycopg.Connection[Any], schema: str, job_id: int | None) -> str:
    """Return the state of job `job_id` in `schema`, failing the test if it has no row."""
    query = sql.SQL("SELECT state FROM {} WHERE id = %s").format(sql.Identifier(schema, "jobs"))
    row = conn.execute(query, (job_id,)).fetchone()
    assert row is not None, f"job {job_id} has no row in {schema}.jobs"
    return str(row[0])


@dataclass
class NodeProcess:
    """A worker node running in its own OS process."""

    process: subprocess.Popen[str]
    node: str
    stderr_path: Path
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    reader: threading.Thread | None = None
    ready_line: str = ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def terminate(self, signum: int = signal.SIGTERM) -> int:
        """Send `signum`, wait for the exit, and SIGKILL the process if it outlives the deadline."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
            try:
                self.process.wait(timeout=NODE_STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=NODE_STOP_SECONDS)
        if self.reader is not None:
            self.reader.join(timeout=NODE_STOP_SECONDS)
        return self.process.returncode


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    """Copy lines of a node's stdout into `lines`, then None at the end, and close the pipe."""
    try:
        for line in stream:
            lines.put(line)
    finally:
        lines.put(None)
        stream.close()


@pytest.fixture
def start_node(
    database_dsn: str, prefix: str, tmp_path: Path
) -> Iterator[Callable[..., NodeProcess]]:
    """Factory that runs `python -m relay_actors worker` as a separate process.

    The factory returns once the process printed its `ready` line. Every
    process still running at teardown gets SIGTERM, then SIGKILL after
    NODE_STOP_SECONDS.
    """
    nodes: list[NodeProcess] = []

    def start(
        queues: Mapping[str, int],
        *,
        node: str | None = None,
        dsn: str | None = None,
        options: Sequence[str] = (),
    ) -> NodeProcess:
        """Start a node on `dsn` (default: the test database) with extra worker flags `options`."""
        node = node or f"node-{secrets.token_hex(3)}"
        command = [
            sys.executable,
            "-m",
            "relay_actors",
            "worker",
            "--dsn",
            dsn or database_dsn,
            "--prefix",
            prefix,
            "--module",
            "tests.workers",
            "--node",
            node,
        ]
        for queue_name, executors in queues.items():
            command += ["--queue", f"{queue_name}={executors}"]
        command += list(options)
        environment = dict(os.environ)
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(REPO_ROOT), *filter(None, [environment.get("PYTHONPATH")])]
        )
        environment["PYTHONUNBUFFERED"] = "1"
        stderr_path = tmp_path / f"{node}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=environment,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        handle = NodeProcess(process, node, stderr_path)
        nodes.append(handle)
        handle.reader = threading.Thread(
            target=_read_lines,
            args=(process.stdout, handle.lines),
            name=f"stdout-{node}",
            daemon=True,
        )
        handle.reader.start()

        deadline = time.monotonic() + NODE_READY_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(
                    f"node {node} printed no ready line within {NODE_READY_SECONDS:.0f} s; "
                    f"stderr:\n{handle.stderr()}"
                )
            try:
                line = handle.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                process.wait(timeout=NODE_STOP_SECONDS)
                pytest.fail(
                    f"node {node} exited with code {process.returncode} before it was ready; "
                    f"command: {' '.join(command)}\nstderr:\n{handle.stderr()}"
                )
            if line.startswith("ready"):
                handle.ready_line = line.rstrip("\n")
                return handle

    yield start
    for handle in nodes:
        handle.terminate()
