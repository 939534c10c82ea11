"""The critical-path diagnostic, run as a command with its traced worker node in another process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg

from tests.conftest import REPO_ROOT

COMMAND_TIMEOUT_SECONDS = 120
# Steps that every round trip has, in either process.
EVERY_ROUND_STEPS = [
    "caller: async_ called",
    "caller: insert statement sent",
    "worker listener: insert notification",
    "worker: claim statement returned",
    "executor: Execute received",
    "executor: outcome handed on",
    "worker: outcome statement sent",
    "caller listener: result notification",
    "caller listener: waiting future resolved",
    "caller: await_ returned",
]


def bench_schemas(dsn: str) -> set[str]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench%'")
        return {row[0] for row in rows}


def test_critical_path_times_every_step(database_dsn: str, tmp_path: Path) -> None:
    events_path = tmp_path / "events.json"
    schemas_before = bench_schemas(database_dsn)

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.critical_path",
            "--dsn",
            database_dsn,
            "--rounds",
            "20",
            "--warmup",
            "5",
            "--events",
            str(events_path),
        ],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        check=False,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    report = completed.stdout
    header = (
        "medians of 20 round trips after 5 untimed ones; server: given; worker commits: durable"
    )
    assert report.startswith(header + "\n")
    table_steps = [
        line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")
    ]
    for step in EVERY_ROUND_STEPS:
        assert step in table_steps, f"{step!r} missing from the report:\n{report}"
    assert "caller: insert" in table_steps
    assert "worker: claim" in table_steps
    events = json.loads(events_path.read_text())
    assert sum(1 for step, _ in events if step == "caller: await_ returned") == 20
    assert bench_schemas(database_dsn) == schemas_before


def test_critical_path_rejects_zero_rounds() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.critical_path", "--rounds", "0"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        check=False,
    )

    assert completed.returncode == 2
    assert "--rounds must be at least 1, not 0" in completed.stderr
