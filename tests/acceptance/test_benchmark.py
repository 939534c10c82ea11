"""The benchmark command at its smallest sizes, against the test server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
