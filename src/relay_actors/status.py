"""`relay-actors status`: job counts per queue and state, and every node's heartbeat figures.

The figures come from two tables of one schema: the jobs table, counted by
queue and state, and the nodes table, where each node's lifeline writes its
queues and statistics with every heartbeat.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from relay_actors.errors import ConfigurationError

# The job states in the order a job usually moves through them.
STATES = (
    "available",
    "scheduled",
    "executing",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
)

_MIGRATED = "SELECT to_regclass(%(jobs)s) IS NOT NULL AND to_regclass(%(nodes)s) IS NOT NULL"

_COUNT_JOBS = """
SELECT queue, state, count(*) FROM {jobs} GROUP BY queue, state ORDER BY queue, state
"""

_READ_NODES = """
SELECT node_id, name, queues, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8, statistics
FROM {nodes}
ORDER BY name, node_id
"""


class SchemaNotMigrated(ConfigurationError):
    """The schema has no relay_actors tables."""


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """One row of the nodes table, with the figures of its last heartbeat.

    Attributes:
        executors: queue name to (busy, total) executors; empty when the node
            runs no queue or its last heartbeat had no figures.
        pending_relays: relays inserted on this node that have no final
            result yet, or None when its last heartbeat did not report them.
    """

    node_id: str
    name: str
    queues: dict[str, int]
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float
    executors: dict[str, tuple[int, int]]
    pending_relays: int | None
    statistics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Status:
    """Job counts and nodes of one schema, as `relay-actors status` shows them."""

    schema: str
    jobs: dict[str, dict[str, int]]
    nodes: list[NodeStatus]


def read_status(conn: psycopg.Connection[Any], prefix: str) -> Status:
    """Read job counts and node rows of schema `prefix`.

    Raises:
        SchemaNotMigrated: the schema lacks the jobs or nodes table.
    """
    tables = {"jobs": sql.Identifier(prefix, "jobs"), "nodes": sql.Identifier(prefix, "nodes")}
    quoted = {name: identifier.as_string(conn) for name, identifier in tables.items()}
    row = conn.execute(_MIGRATED, quoted).fetchone()
    if row is None or not row[0]:
        raise SchemaNotMigrated(
            f"schema {prefix!r} has no relay_actors tables: run "
            f"`relay-actors migrate --prefix {prefix}`, or start a node on it, then retry"
        )
    jobs: dict[str, dict[str, int]] = {}
    for queue, state, count in conn.execute(sql.SQL(_COUNT_JOBS).format(**tables)):
        jobs.setdefault(queue, dict.fromkeys(STATES, 0))[state] = int(count)
    rows = conn.execute(sql.SQL(_READ_NODES).format(**tables)).fetchall()
    return Status(prefix, jobs, [_node_status(row) for row in rows])


def _node_status(row: tuple[Any, ...]) -> NodeStatus:
    node_id, name, queues, started_at, heartbeat_at, age, statistics = row
    statistics = statistics if isinstance(statistics, dict) else {}
    executors: dict[str, tuple[int, int]] = {}
    reported = statistics.get("queues")
    if isinstance(reported, dict):
        for queue, figures in reported.items():
            if isinstance(figures, dict):
                executors[queue] = (int(figures.get("busy", 0)), int(figures.get("executors", 0)))
    pending = statistics.get("pending_relays")
    return NodeStatus(
        node_id=node_id,
        name=name,
        queues={str(queue): int(size) for queue, size in (queues or {}).items()},
        started_at=started_at,
        heartbeat_at=heartbeat_at,
        heartbeat_age=float(age),
        executors=executors,
        pending_relays=pending if isinstance(pending, int) else None,
        statistics=statistics,
    )


def status_to_json(status: Status) -> str:
    """Return the status as JSON text: times in ISO 8601, ages in seconds."""
    document = {
        "schema": status.schema,
        "queues": status.jobs,
        "nodes": [
            {
                "node_id": node.node_id,
                "name": node.name,
                "queues": node.queues,
                "started_at": node.started_at.isoformat(),
                "heartbeat_at": node.heartbeat_at.isoformat(),
                "heartbeat_age_seconds": round(node.heartbeat_age, 3),
                "executors": {
                    queue: {"busy": busy, "total": total}
                    for queue, (busy, total) in node.executors.items()
                },
                "pending_relays": node.pending_relays,
                "statistics": node.statistics,
            }
            for node in status.nodes
        ],
    }
    return json.dumps(document, indent=2)


def format_table(header: list[str], rows: list[list[str]], numeric: set[int]) -> list[str]:
    """Return the lines of a table whose columns are padded to their widest cell.

    Columns whose index is in `numeric` are aligned right, the others left.
    """
    widths = [len(title) for title in header]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [header, *rows]:
        cells = [
            cell.rjust(width) if index in numeric else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def format_age(seconds: float) -> str:
    """Return a heartbeat age as text: 4.2s, 3m05s or 2h07m."""
    if not math.isfinite(seconds) or seconds < 0:
        seconds = 0.0
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def status_to_text(status: Status) -> str:
    """Return the status as two aligned tables: jobs per queue and state, then nodes."""
    lines = [f"schema {status.schema}", ""]
    if status.jobs:
        rows = [
            [queue, *(str(counts[state]) for state in STATES)]
            for queue, counts in status.jobs.items()
        ]
        lines += format_table(
            ["QUEUE", *(state.upper() for state in STATES)],
            rows,
            numeric=set(range(1, len(STATES) + 1)),
        )
    else:
        lines.append("no jobs")
    lines.append("")
    if status.nodes:
        rows = [_node_row(node) for node in status.nodes]
        header = ["NODE", "NAME", "EXECUTORS BUSY/TOTAL", "PENDING RELAYS", "HEARTBEAT", "AGE"]
        lines += format_table(header, rows, numeric={3, 5})
    else:
        lines.append("no nodes")
    return "\n".join(lines) + "\n"


def _node_row(node: NodeStatus) -> list[str]:
    if node.executors:
        executors = " ".join(
            f"{queue}={busy}/{total}" for queue, (busy, total) in sorted(node.executors.items())
        )
    elif node.queues:
        # A node that has not sent a heartbeat with figures yet: show its sizes.
        executors = " ".join(f"{queue}=?/{size}" for queue, size in sorted(node.queues.items()))
    else:
        executors = "-"
    pending = "?" if node.pending_relays is None else str(node.pending_relays)
    heartbeat = node.heartbeat_at.strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    return [node.node_id, node.name, executors, pending, heartbeat, format_age(node.heartbeat_age)]
