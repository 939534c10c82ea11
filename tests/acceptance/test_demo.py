"""The demo command, run as a user runs it, at a reduced size."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import psycopg

from relay_actors.store.connect import server_address
from tests.conftest import REPO_ROOT

DEMO_JOBS = 50
DEMO_TIMEOUT_SECONDS = 120


def test_demo_passes_at_fifty_jobs(database_dsn: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "relay_actors",
            "demo",
            "--jobs",
            str(DEMO_JOBS),
            "--json",
            "--dsn",
            database_dsn,
        ],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        env=environment,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["passed"] is True
    assert summary["jobs"] == DEMO_JOBS
    assert summary["ok"] == DEMO_JOBS
    assert summary["mismatched"] == 0
    assert summary["caller_errors"] == 0
    for kind in ("snoozed", "discarded", "cancelled", "result_too_large", "exception", "timeout"):
        assert summary["error_results"][kind] is True, kind
        assert summary["results"][kind] == 1, kind
    assert summary["results"]["ok"] == DEMO_JOBS
    assert summary["latency_ms"]["p50"] > 0


def test_demo_drops_its_schema(database_dsn: str) -> None:
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    completed = subprocess.run(
        [sys.executable, "-m", "relay_actors", "demo", "--jobs", "5", "--dsn", database_dsn],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        env=environment,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "demo: passed: 5/5 files matched" in completed.stdout
    # It names the server and the schema it used, so a user can find both.
    assert f"demo: using the server at {server_address(database_dsn)}, in schema demo_" in (
        completed.stderr
    )
    with psycopg.connect(database_dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'demo\\_%'"
        ).fetchall()
    assert rows == []
