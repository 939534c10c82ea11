"""The benchmark command at its smallest sizes, against the test server."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from benchmarks.server import fresh_schema
from benchmarks.statement_floor import NODE, StatementFloorSide
from psycopg import sql

from relay_actors import codec
from tests.acceptance.conftest import bench_schemas, run_module

# A quick run took 14 s on a 2-vCPU machine.
COMMAND_TIMEOUT_SECONDS = 150


@pytest.mark.timeout(COMMAND_TIMEOUT_SECONDS + 30)
def test_quick_benchmark_passes(database_dsn: str, tmp_path: Path) -> None:
    report_path = tmp_path / "quick.json"
    schemas_before = bench_schemas(database_dsn)

    completed = run_module(
        "benchmarks",
        "--dsn",
        database_dsn,
        "--quick",
        "--runs",
        "1",
        "--json",
        str(report_path),
        timeout=COMMAND_TIMEOUT_SECONDS,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "| latency p50 (ms) |" in completed.stdout
    report = json.loads(report_path.read_text())
    assert report["passed"] is True
    assert report["failures"]["total"] == 0
    (run,) = report["runs"]
    floor = run["floor"]
    assert floor["latency"]["rounds"] == 50
    assert floor["latency_durable_claims"]["rounds"] == 50
    # The floor that commits its claims first flushes the WAL for its
    # claim, its completion and the caller's insert: three flushes per job.
    # Other commits on the server can only add flushes.
    assert floor["latency_durable_claims"]["wal"]["syncs_per_job"] >= 2.9
    # The floor's loop with relay_actors' statements also commits three times per job.
    assert floor["latency_relay_statements"]["rounds"] == 50
    assert floor["latency_relay_statements"]["wal"]["syncs_per_job"] >= 2.9
    assert "floor with relay_actors' table and statements" in completed.stdout
    idle_costs = report["environment"]["idle_costs"]
    assert set(idle_costs) == {
        f"{step}_{mode}" for step in ("select", "commit", "wake") for mode in ("busy", "idle")
    }
    for name, micros in idle_costs.items():
        assert micros > 0, name
    # Each idle sample sleeps 1 ms first, which the timed step must not include.
    assert idle_costs["select_idle"] < 1000
    assert "after 1 ms idle, SELECT 1" in completed.stdout
    assert bench_schemas(database_dsn) == schemas_before


@pytest.mark.timeout(60)
def test_statement_floor_completes_jobs(database_dsn: str) -> None:
    with fresh_schema(database_dsn) as schema:
        side = StatementFloorSide(database_dsn, schema)
        side.start()
        try:
            result = side.latency(5, 0)
            with psycopg.connect(database_dsn) as conn:
                rows = conn.execute(
                    sql.SQL("SELECT state, outcome, attempt, attempted_by, result FROM {}").format(
                        sql.Identifier(schema, "jobs")
                    )
                ).fetchall()
        finally:
            side.stop()

    assert result["failures"].as_dict()["count"] == 0
    assert sorted(codec.decode(row[4]) for row in rows) == [0, 1, 2, 3, 4]
    assert {row[0] for row in rows} == {"completed"}
    assert {row[1] for row in rows} == {"ok"}
    assert {row[2] for row in rows} == {1}
    assert {row[3] for row in rows} == {NODE}


def test_floor_worker_rejects_lone_relay_statements(database_dsn: str) -> None:
    completed = run_module(
        "benchmarks.floor_worker",
        "--dsn",
        database_dsn,
        "--schema",
        "unused",
        "--relay-statements",
        timeout=30,
    )

    assert completed.returncode == 2
    assert "--relay-statements needs --durable-claims" in completed.stderr
