"""The claim, unclaim and record statements on a real table: plans and matched rows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.types.json import Jsonb

from relay_actors import Job
from relay_actors.actors.messages import AttemptOutcome, RelayTarget
from relay_actors.actors.outcomes import failed_attempt
from relay_actors.actors.recording import OutcomeWriter, _fits_one_row, _plainly_completed
from relay_actors.inserting import execute_insert
from relay_actors.store.migrations import migrate
from relay_actors.store.statements import Statements, statements_for
from relay_actors.wire import parse_payload

NODE = "node-under-test"
QUEUE = "statements"
# Enough finished rows that a plan scanning the whole table costs more than the index.
FINISHED_ROWS = 5_000


@pytest.fixture
def conn(database_dsn: str, prefix: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_dsn, autocommit=True) as connection:
        migrate(connection, prefix)
        yield connection


def insert_job(conn: psycopg.Connection[Any], statements: Statements) -> int:
    job = Job(worker="w", args={}, queue=QUEUE)
    (row,) = execute_insert(statements, "unused", conn, [job], [{}])
    job_id: int = row[0]
    return job_id


def claim(conn: psycopg.Connection[Any], statements: Statements) -> tuple[int, int]:
    rows = conn.execute(statements.claim, {"node": NODE, "queue": QUEUE, "limit": 1}).fetchall()
    assert len(rows) == 1, f"expected one claimed job, got {rows}"
    return rows[0][0], rows[0][6]


def row_of(conn: psycopg.Connection[Any], prefix: str, job_id: int) -> tuple[Any, ...]:
    query = sql.SQL("SELECT state, attempt, attempted_by FROM {} WHERE id = %s").format(
        sql.Identifier(prefix, "jobs")
    )
    row = conn.execute(query, (job_id,)).fetchone()
    assert row is not None
    return row


def test_unclaim_matches_claimed_attempt(conn: psycopg.Connection[Any], prefix: str) -> None:
    statements = statements_for(prefix)
    job_id = insert_job(conn, statements)
    claimed_id, attempt = claim(conn, statements)
    assert claimed_id == job_id
    params = {"ids": [job_id], "node": NODE, "channel": "unused"}

    conn.execute(statements.unclaim, {**params, "attempts": [attempt + 1]})
    assert row_of(conn, prefix, job_id) == ("executing", attempt, NODE)

    conn.execute(statements.unclaim, {**params, "attempts": [attempt]})
    assert row_of(conn, prefix, job_id) == ("available", attempt - 1, None)


def insert_executing_rows(conn: psycopg.Connection[Any], prefix: str) -> None:
    """Insert FINISHED_ROWS jobs that NODE is executing, with ids from 1."""
    conn.execute(
        sql.SQL(
            "INSERT INTO {} (state, queue, worker, attempt, attempted_by) "
            "SELECT 'executing', %s, 'w', 1, %s FROM generate_series(1, %s)"
        ).format(sql.Identifier(prefix, "jobs")),
        (QUEUE, NODE, FINISHED_ROWS),
    )


def record_params(job_id: int, attempt: int) -> dict[str, dict[str, Any]]:
    """Return the parameters of every record statement for one completed attempt."""
    outcome = {
        "id": job_id,
        "attempt": attempt,
        "state": "completed",
        "delay": 0.0,
        "extra_attempts": 0,
    }
    batch = {
        "outcomes": Jsonb([outcome]),
        "outcome_ids": [job_id],
        "notifications": Jsonb([]),
    }
    unset = ["outcome", "result", "error", "meta_patch", "outcome_node", "channel", "payload"]
    one_row = {**dict.fromkeys(unset), **outcome, "ids": ""}
    claim_params = {"node": NODE, "queue": QUEUE, "limit": 1}
    return {
        "record": batch,
        "record_and_claim": {**batch, **claim_params},
        "record_one": one_row,
        "record_one_and_claim": {**one_row, **claim_params},
        "record_completed": one_row,
        "record_completed_and_claim": {**one_row, **claim_params},
    }


# A plan node that reads the jobs table or one of its indexes, as EXPLAIN
# names them: "Seq Scan on jobs j", "Index Scan using jobs_pkey on jobs j",
# "Bitmap Index Scan on jobs_executing_id_idx".
JOBS_SCAN = re.compile(r"Scan (using \S+ )?on jobs(_\w+)?( \w+)?$")


def jobs_scans(plan: list[str]) -> list[tuple[str, list[str]]]:
    """Return each scan of the jobs table in the plan, with its detail lines."""
    scans = []
    for number, line in enumerate(plan):
        node = line.split(" (")[0].rstrip()
        if not JOBS_SCAN.search(node):
            continue
        details = []
        for detail in plan[number + 1 :]:
            if "->" in detail:
                break
            details.append(detail.strip())
        scans.append((line.strip(), details))
    return scans


def unindexed_scans(plan: list[str]) -> list[str]:
    """Return the plan's scans of the jobs table that have no index condition.

    Such a scan reads every entry of its index, or every row of the table.
    """
    # A bitmap heap scan reads the pages that its bitmap index scan found.
    return [
        line
        for line, details in jobs_scans(plan)
        if "Bitmap Heap Scan" not in line
        and not any(detail.startswith("Index Cond") for detail in details)
    ]


def entries_read(plan: list[str]) -> int:
    """Return the index entries and rows that the scans of jobs in an analyzed plan read."""
    total = 0.0
    for line, details in jobs_scans(plan):
        # PostgreSQL 18 prints actual rows with two decimals ("rows=1.00").
        actual = re.search(r"actual time=\S+ rows=([\d.]+) loops=(\d+)", line)
        if actual is not None:
            total += float(actual.group(1)) * int(actual.group(2))
        for detail in details:
            if detail.startswith("Rows Removed by"):
                total += int(detail.rpartition(" ")[2])
    return round(total)


def test_outcome_writes_find_rows_by_id(conn: psycopg.Connection[Any], prefix: str) -> None:
    """The planner guesses 100 rows for a JSON batch: the write must still look up each id.

    A scan without an index condition on jobs, even of a partial index of
    executing rows, reads the entries of jobs that finished since the last
    VACUUM, so its cost grows with the jobs run.
    """
    statements = statements_for(prefix)
    insert_executing_rows(conn, prefix)
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(prefix, "jobs")))
    params = record_params(job_id=1, attempt=1)
    unclaim = {"ids": [1, 2], "attempts": [1, 1], "node": NODE, "channel": "unused"}
    # A prepared statement of the nodes may settle on the generic plan.
    for mode in ("force_generic_plan", "force_custom_plan"):
        conn.execute(sql.SQL("SET plan_cache_mode = {}").format(sql.SQL(mode)))
        for name, statement, values in [
            *((name, getattr(statements, name), values) for name, values in params.items()),
            ("unclaim", statements.unclaim, unclaim),
        ]:
            plan = [row[0] for row in conn.execute(b"EXPLAIN " + statement, values).fetchall()]
            assert unindexed_scans(plan) == [], f"{name}, {mode}:\n" + "\n".join(plan)


# Recording one outcome reads the entry of its own job, and the claims find
# nothing to claim. Through schema version 2's index, keyed by node, the same
# writes read over 5,000 entries, one for each job of the node.
ENTRIES_PER_WRITE = 20


def test_outcome_write_reads_few_entries(conn: psycopg.Connection[Any], prefix: str) -> None:
    """Recording one outcome reads a few index entries, however many jobs the node finished.

    Autovacuum is off for the table, so the finished jobs' old row versions
    and index entries stay, as they do between two VACUUMs. Counted from the
    plan's actual rows, which unlike time does not depend on the machine.
    """
    statements = statements_for(prefix)
    jobs = sql.Identifier(prefix, "jobs")
    conn.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(jobs))
    insert_executing_rows(conn, prefix)
    conn.execute(sql.SQL("UPDATE {} SET state = 'completed'").format(jobs))
    job_id = insert_job(conn, statements)
    _, attempt = claim(conn, statements)
    for name, values in record_params(job_id, attempt).items():
        statement = getattr(statements, name)
        with conn.transaction(force_rollback=True):
            plan = [
                row[0] for row in conn.execute(b"EXPLAIN (ANALYZE) " + statement, values).fetchall()
            ]
        read = entries_read(plan)
        report = f"{name} read {read} entries:\n" + "\n".join(plan)
        assert read > 0, report
        assert read <= ENTRIES_PER_WRITE, report


def test_outcome_skips_same_attempt_of_other_node(
    conn: psycopg.Connection[Any], prefix: str
) -> None:
    """A rescue of an attempt must not end the same attempt number on another node.

    Returning a prefetched job unstarted gives its attempt number back, so a
    rescue prepared before the return would otherwise match the next claim.
    """
    statements = statements_for(prefix)
    job_id = insert_job(conn, statements)
    _, attempt = claim(conn, statements)
    rescue = failed_attempt(
        job_id=job_id,
        queue=QUEUE,
        attempt=attempt,
        max_attempts=20,
        error_type="relay_actors.failures.AttemptLost",
        message=f"node {NODE} stopped heartbeating",
        trace="",
        node_id=NODE,
        relay=None,
        delay=0.0,
        retry_state="available",
    )
    conn.execute(
        statements.unclaim,
        {"ids": [job_id], "attempts": [attempt], "node": NODE, "channel": "unused"},
    )
    (reclaimed,) = conn.execute(
        statements.claim, {"node": "other-node", "queue": QUEUE, "limit": 1}
    ).fetchall()
    assert reclaimed[6] == attempt

    OutcomeWriter(statements, "unused", None).write(conn, [rescue])

    assert row_of(conn, prefix, job_id) == ("executing", attempt, "other-node")


RELAY_CHANNEL = "statements_relay"
WAKE_CHANNEL = "statements_wake"
# One outcome of each kind the record statements handle differently.
OUTCOMES = {
    "completed": {"state": "completed", "status": "ok", "result": b"\x00value"},
    "completed_with_meta": {
        "state": "completed",
        "status": "ok",
        "result": b"\x00value",
        "meta_patch": {"progress": 100},
    },
    "retryable": {
        "state": "retryable",
        "status": "error",
        "delay": 30.0,
        "error": {"attempt": 1, "error": "ValueError: bad"},
    },
    "snoozed": {
        "state": "scheduled",
        "status": "snoozed",
        "delay": 60.0,
        "extra_attempts": 1,
        "meta_patch": {"snoozed": 1},
    },
    "discarded": {"state": "discarded", "status": "discarded", "result": b"\x01reason"},
    "cancelled": {"state": "cancelled", "status": "cancelled"},
    "released": {"state": "available", "status": "error"},
}


def recorded_row(conn: psycopg.Connection[Any], prefix: str, job_id: int) -> tuple[Any, ...]:
    """Return the row's recorded columns, with its timestamps as offsets from now."""
    query = sql.SQL(
        "SELECT state, outcome, result, errors, meta, max_attempts, attempt,"
        " completed_at IS NOT NULL, discarded_at IS NOT NULL, cancelled_at IS NOT NULL,"
        " round(extract(epoch FROM scheduled_at - now()))"
        " FROM {} WHERE id = %s"
    ).format(sql.Identifier(prefix, "jobs"))
    row = conn.execute(query, (job_id,)).fetchone()
    assert row is not None
    return row


@pytest.mark.parametrize("claim_too", [False, True], ids=["write", "write_and_claim"])
@pytest.mark.parametrize("kind", sorted(OUTCOMES))
def test_lone_outcome_matches_batch(
    conn: psycopg.Connection[Any], database_dsn: str, prefix: str, kind: str, claim_too: bool
) -> None:
    """Check that the one-row record statements write and notify as the JSON batch does.

    One outcome takes the one-row statements, two take the JSON batch. A claim,
    when there is one, is for another node than the one that ran the attempts,
    so the outcome's node cannot be mistaken for the claim's.
    """
    statements = statements_for(prefix)
    for _ in range(3):
        insert_job(conn, statements)
    claimed = conn.execute(statements.claim, {"node": NODE, "queue": QUEUE, "limit": 3}).fetchall()
    (alone, attempt), (batched, _), (other, _) = sorted((row[0], row[6]) for row in claimed)

    def outcome(job_id: int) -> AttemptOutcome:
        # A released attempt with a relay needs two notifications (its result
        # and its queue's wake-up), and the one-row statements carry one. So the
        # released attempt here has no relay, and the wake-up is its notification.
        relay = None
        if kind != "released":
            relay = RelayTarget(RELAY_CHANNEL, "mailbox", f"ref-{job_id}", inline=True)
        return AttemptOutcome(
            job_id=job_id, attempt=attempt, queue=QUEUE, node=NODE, relay=relay, **OUTCOMES[kind]
        )

    writer = OutcomeWriter(statements, WAKE_CHANNEL, None)
    assert _fits_one_row([outcome(alone)], writer.notifications([outcome(alone)]))
    # A plain completion takes the statements that set only its own columns.
    assert _plainly_completed(outcome(alone)) == (kind == "completed")

    def write(outcomes: list[AttemptOutcome]) -> None:
        if claim_too:
            # Claiming nothing keeps a released job available for the comparison.
            writer.write_and_claim(conn, outcomes, node="claiming-node", queue=QUEUE, limit=0)
        else:
            writer.write(conn, outcomes)

    with psycopg.connect(database_dsn, autocommit=True) as listener:
        for channel in (RELAY_CHANNEL, WAKE_CHANNEL):
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        write([outcome(alone)])
        write([outcome(batched), outcome(other)])
        notifications = [
            (notify.channel, notify.payload)
            for notify in listener.notifies(timeout=5.0, stop_after=2)
        ]

    assert recorded_row(conn, prefix, alone) == recorded_row(conn, prefix, batched)
    assert recorded_row(conn, prefix, alone)[0] == OUTCOMES[kind]["state"]
    if kind == "released":
        assert notifications == [(WAKE_CHANNEL, QUEUE), (WAKE_CHANNEL, QUEUE)]
        return
    announced = {
        entry.delivery.job_id: entry.delivery
        for channel, payload in notifications
        for entry in parse_payload(payload)
    }
    assert announced.keys() == {alone, batched, other}
    assert announced[alone].status == announced[batched].status
    assert announced[alone].status == OUTCOMES[kind]["status"]
    assert announced[alone].payload == announced[batched].payload
    assert announced[alone].final == announced[batched].final


@pytest.mark.parametrize("due", ["later", "now", "unset"])
def test_lone_insert_matches_batch(
    conn: psycopg.Connection[Any], database_dsn: str, prefix: str, due: str
) -> None:
    """Check that a lone job and a batch write and notify alike, rows returned in input order.

    A lone job takes the one-row statement, two take the JSON batch. Only
    available jobs wake their queue: one notification per statement.
    """
    statements = statements_for(prefix)
    scheduled_at = {
        "later": datetime.now(UTC) + timedelta(hours=1),
        "now": datetime.now(UTC) - timedelta(seconds=1),
        "unset": None,
    }[due]
    tags = () if due == "unset" else ("a", "b")

    def job(n: int) -> Job:
        return Job(
            worker="w",
            args={"n": n},
            queue=QUEUE,
            tags=tags,
            priority=3,
            max_attempts=5,
            scheduled_at=scheduled_at,
        )

    with psycopg.connect(database_dsn, autocommit=True) as listener:
        listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(WAKE_CHANNEL)))
        (lone,) = execute_insert(
            statements, WAKE_CHANNEL, conn, [job(0)], [{"relay": {"ref": "r0"}}]
        )
        batch = execute_insert(
            statements,
            WAKE_CHANNEL,
            conn,
            [job(1), job(2)],
            [{"relay": {"ref": "r1"}}, {"relay": {"ref": "r2"}}],
        )
        # A marker after both inserts, so that the wait ends without a timeout.
        conn.execute("SELECT pg_notify(%s, 'end')", (WAKE_CHANNEL,))
        notifications = []
        for notify in listener.notifies(timeout=5.0):
            if notify.payload == "end":
                break
            notifications.append(notify.payload)

    query = sql.SQL(
        "SELECT args, state, queue, worker, tags, max_attempts, priority,"
        " scheduled_at = coalesce(%s, inserted_at) FROM {} WHERE id = %s"
    ).format(sql.Identifier(prefix, "jobs"))
    rows = [conn.execute(query, (scheduled_at, row[0])).fetchone() for row in [lone, *batch]]

    state = "scheduled" if due == "later" else "available"
    for n, row in enumerate(rows):
        assert row == ({"n": n}, state, QUEUE, "w", list(tags), 5, 3, True)
    for returned in [lone, *batch]:
        _, returned_state, inserted_at, returned_scheduled_at = returned
        assert returned_state == state
        assert returned_scheduled_at == (scheduled_at or inserted_at)
    assert notifications == ([] if due == "later" else [QUEUE, QUEUE])
