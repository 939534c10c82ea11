"""The critical-path diagnostic, run as a command with its traced worker node in another process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.acceptance.conftest import bench_schemas, run_module

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

# Steps that every floor round trip has.
FLOOR_ROUND_STEPS = [
    "caller: insert called",
    "caller: insert statement sent",
    "caller: insert statement returned",
    "worker listener: insert notification",
    "worker: claim statement sent",
    "worker: claim statement returned",
    "worker: complete statement sent",
    "caller: result received",
]


def test_critical_path_times_every_step(database_dsn: str, tmp_path: Path) -> None:
    events_path = tmp_path / "events.json"
    schemas_before = bench_schemas(database_dsn)

    completed = run_module(
        "benchmarks.critical_path",
        "--dsn",
        database_dsn,
        "--rounds",
        "20",
        "--warmup",
        "5",
        "--events",
        str(events_path),
        timeout=COMMAND_TIMEOUT_SECONDS,
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


@pytest.mark.parametrize(
    ("flags", "mode", "worker_steps"),
    [
        (["--durable-claims"], "claims committed first", []),
        ([], "claim and completion in one transaction", ["worker: commit statement sent"]),
    ],
)
def test_critical_path_traces_the_floor(
    database_dsn: str, flags: list[str], mode: str, worker_steps: list[str]
) -> None:
    schemas_before = bench_schemas(database_dsn)

    completed = run_module(
        "benchmarks.critical_path",
        "--dsn",
        database_dsn,
        "--floor",
        *flags,
        "--rounds",
        "20",
        "--warmup",
        "5",
        timeout=COMMAND_TIMEOUT_SECONDS,
    )

    assert completed.returncode == 0, completed.stderr[-2000:]
    report = completed.stdout
    header = (
        f"medians of 20 round trips after 5 untimed ones; server: given; "
        f"floor worker commits: {mode}"
    )
    assert report.startswith(header + "\n")
    table_steps = [
        line.split("|")[1].strip() for line in report.splitlines() if line.startswith("| ")
    ]
    for step in [*FLOOR_ROUND_STEPS, *worker_steps]:
        assert step in table_steps, f"{step!r} missing from the report:\n{report}"
    # The completion's commit sends the result, so the caller can have it
    # before the worker's call returns. That statement may then lack a duration.
    for statement in ("caller: insert", "worker: claim"):
        assert statement in table_steps, f"{statement!r} missing from the report:\n{report}"
    assert bench_schemas(database_dsn) == schemas_before


def test_critical_path_rejects_durable_claims_without_floor() -> None:
    completed = run_module(
        "benchmarks.critical_path", "--durable-claims", timeout=COMMAND_TIMEOUT_SECONDS
    )

    assert completed.returncode == 2
    assert "--durable-claims applies to --floor only" in completed.stderr


def test_critical_path_rejects_zero_rounds() -> None:
    completed = run_module(
        "benchmarks.critical_path", "--rounds", "0", timeout=COMMAND_TIMEOUT_SECONDS
    )

    assert completed.returncode == 2
    assert "--rounds must be at least 1, not 0" in completed.stderr
