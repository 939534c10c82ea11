"""Formatting of `relay-actors status`: aligned tables, ages and JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from relay_actors.status import (
    STATES,
    NodeStatus,
    Status,
    format_age,
    format_table,
    status_to_json,
    status_to_text,
)

STARTED = datetime(2026, 12, 4, 22, 0, 0, tzinfo=UTC)
HEARTBEAT = datetime(2026, 12, 4, 23, 0, 1, tzinfo=UTC)


def make_node(**changes: object) -> NodeStatus:
    fields: dict[str, object] = {
        "node_id": "web-1-0a1b2c",
        "name": "web-1",
        "queues": {"math": 10, "mail": 2},
        "started_at": STARTED,
        "heartbeat_at": HEARTBEAT,
        "heartbeat_age": 2.25,
        "executors": {"math": (3, 10), "mail": (0, 2)},
        "pending_relays": 7,
        "statistics": {"restarts": 0},
    }
    fields.update(changes)
    return NodeStatus(**fields)  # type: ignore[arg-type]


def make_status(**changes: object) -> Status:
    jobs = {
        "mail": dict.fromkeys(STATES, 0) | {"available": 12},
        "math": dict.fromkeys(STATES, 0) | {"completed": 1500, "executing": 3},
    }
    fields: dict[str, object] = {"schema": "public", "jobs": jobs, "nodes": [make_node()]}
    fields.update(changes)
    return Status(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0s"),
        (4.24, "4.2s"),
        (59.9, "59.9s"),
        (185.0, "3m05s"),
        (7620.0, "2h07m"),
        (-1.0, "0.0s"),
        (float("nan"), "0.0s"),
    ],
)
def test_age_format(seconds: float, text: str) -> None:
    assert format_age(seconds) == text


def test_table_columns_aligned() -> None:
    lines = format_table(["QUEUE", "COUNT"], [["a", "1"], ["longer_queue", "12345"]], numeric={1})
    assert lines == [
        "QUEUE         COUNT",
        "a                 1",
        "longer_queue  12345",
    ]


def test_table_left_aligned_last_column_unpadded() -> None:
    lines = format_table(["NAME", "NOTE"], [["x", "short"], ["y", "a longer note"]], numeric=set())
    assert lines[1] == "x     short"
    assert lines[2] == "y     a longer note"


def test_text_lists_queue_counts() -> None:
    lines = status_to_text(make_status()).splitlines()
    assert lines[0] == "schema public"
    header = lines[2].split()
    assert header == ["QUEUE", *(state.upper() for state in STATES)]
    mail = lines[3].split()
    math = lines[4].split()
    assert mail == ["mail", "12", "0", "0", "0", "0", "0", "0"]
    assert math == ["math", "0", "0", "3", "0", "1500", "0", "0"]
    # Numbers are aligned right, under the end of their heading.
    completed_end = lines[2].index("COMPLETED") + len("COMPLETED")
    assert lines[4][completed_end - 4 : completed_end] == "1500"
    assert lines[3][completed_end - 1] == "0"


def test_text_lists_nodes() -> None:
    text = status_to_text(make_status())
    node_lines = text.split("\n\n")[2].splitlines()
    assert node_lines[0].split()[:2] == ["NODE", "NAME"]
    row = node_lines[1]
    assert row.startswith("web-1-0a1b2c  web-1")
    assert "mail=0/2 math=3/10" in row
    assert "2026-12-04 23:00:01 UTC" in row
    assert row.endswith("2.2s")
    pending_end = node_lines[0].index("PENDING RELAYS") + len("PENDING RELAYS")
    assert row[pending_end - 1] == "7"


def test_text_without_heartbeat_figures() -> None:
    node = make_node(executors={}, pending_relays=None)
    row = status_to_text(make_status(nodes=[node])).split("\n\n")[2].splitlines()[1]
    assert "mail=?/2 math=?/10" in row
    assert " ? " in row


def test_text_of_empty_schema() -> None:
    assert (
        status_to_text(make_status(jobs={}, nodes=[])) == "schema public\n\nno jobs\n\nno nodes\n"
    )


def test_json_document() -> None:
    document = json.loads(status_to_json(make_status()))
    assert document["schema"] == "public"
    assert document["queues"]["math"]["completed"] == 1500
    assert document["queues"]["mail"]["available"] == 12
    assert set(document["queues"]["mail"]) == set(STATES)
    [node] = document["nodes"]
    assert node["node_id"] == "web-1-0a1b2c"
    assert node["name"] == "web-1"
    assert node["queues"] == {"math": 10, "mail": 2}
    assert node["heartbeat_at"] == "2026-12-04T23:00:01+00:00"
    assert node["started_at"] == "2026-12-04T22:00:00+00:00"
    assert node["heartbeat_age_seconds"] == 2.25
    assert node["executors"] == {"math": {"busy": 3, "total": 10}, "mail": {"busy": 0, "total": 2}}
    assert node["pending_relays"] == 7
    assert node["statistics"] == {"restarts": 0}
