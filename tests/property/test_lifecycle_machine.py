"""A state machine of the job lifecycle, driven through the library's own SQL on PostgreSQL.

The machine inserts jobs with `Relay.async_`, `async_many` or the
`insert` statement. It claims them with the `claim` statement as two fake
nodes: one with a fresh heartbeat, one without a node row. It records
outcomes through a real `AckerActor`, cancels through `Instance.cancel_job`,
stages due jobs and rescues the dead node's jobs with `find_orphans`. A model
predicts every row's state. After each step the rows must match it, and every
change of a row must be a legal transition that never touches a final outcome.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pykka
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    MultipleResults,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql
from psycopg.types.json import Jsonb

from relay_actors import Instance, Job, Relay
from relay_actors.actors.acker import AckerActor
from relay_actors.actors.messages import Record, Sync
from relay_actors.actors.outcomes import failed_attempt, from_return, relay_target
from relay_actors.inserting import execute_insert
from relay_actors.markers import Cancel, Discard, Snooze
from relay_actors.store.statements import statements_for
from tests.workers import Echo

DATABASE = settings.get_profile("database")
# Hypothesis draws each run's length up to this count; runs average about 30 steps.
STEPS = 40
SYNC_SECONDS = 10.0
RESCUE_AFTER_SECONDS = 60.0
FAR_FUTURE_SECONDS = 3600.0

outcome_kinds = st.sampled_from(["value", "fail", "snooze", "discard", "cancel"])

FINAL = frozenset({"completed", "discarded", "cancelled"})
LEGAL = {
    "available": {"executing", "cancelled"},
    "scheduled": {"available", "cancelled"},
    "retryable": {"available", "cancelled"},
    "executing": {"completed", "retryable", "scheduled", "discarded", "cancelled", "available"},
    "completed": set(),
    "discarded": set(),
    "cancelled": set(),
}
# Columns compared between steps; a final row must keep all of them.
COLUMNS = (
    "state",
    "attempt",
    "max_attempts",
    "attempted_by",
    "outcome",
    "result",
    "errors",
    "completed_at",
    "discarded_at",
    "cancelled_at",
)


@dataclass
class ModelJob:
    """What the machine expects of one job's row."""

    state: str
    attempt: int
    max_attempts: int
    relay: bool
    due: bool = True
    node: str | None = None


class JobLifecycle(RuleBasedStateMachine):
    """Jobs of one fresh queue, moved through every transition the library makes."""

    # Set by the test function before the machine runs.
    dsn = ""
    prefix = ""
    instance: Instance
    acker: pykka.ActorRef[Any]

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.conn = psycopg.connect(self.dsn, autocommit=True)
        self.other = psycopg.connect(self.dsn, autocommit=True)
        self.statements = statements_for(self.prefix)
        token = secrets.token_hex(4)
        self.queue = f"machine-{token}"
        self.alive = f"alive-{token}"
        self.dead = f"dead-{token}"
        self.model: dict[int, ModelJob] = {}
        self.rows: dict[int, dict[str, Any]] = {}
        self.final_rows: dict[int, dict[str, Any]] = {}
        self.conn.execute(
            self.statements.upsert_node,
            {"node_id": self.alive, "name": "alive", "queues": Jsonb({}), "workers": []},
        )

    def teardown(self) -> None:
        jobs = sql.Identifier(self.prefix, "jobs")
        nodes = sql.Identifier(self.prefix, "nodes")
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE queue = %s").format(jobs), (self.queue,))
        self.conn.execute(sql.SQL("DELETE FROM {} WHERE node_id = %s").format(nodes), (self.alive,))
        self.conn.close()
        self.other.close()

    # Rules

    @rule(
        target=jobs,
        through_relay=st.booleans(),
        max_attempts=st.integers(min_value=1, max_value=3),
        scheduled=st.booleans(),
    )
    def insert(self, through_relay: bool, max_attempts: int, scheduled: bool) -> int:
        scheduled_in = FAR_FUTURE_SECONDS if scheduled else None
        job = Echo.new(
            {"value": "machine"},
            queue=self.queue,
            max_attempts=max_attempts,
            scheduled_in=scheduled_in,
        )
        if through_relay:
            relay = Relay.async_(self.instance.name, job)
            job_id = relay.job.id
            state = relay.job.state
        else:
            (row,) = execute_insert(
                self.statements, self.instance.insert_channel, self.conn, [job], [{}]
            )
            job_id, state = row[0], row[1]
        assert job_id is not None
        assert state == ("scheduled" if scheduled else "available")
        self.model[job_id] = ModelJob(state, 0, max_attempts, through_relay, due=not scheduled)
        return job_id

    @initialize(target=jobs, count=st.integers(min_value=1, max_value=4))
    def insert_batch(self, count: int) -> MultipleResults[int]:
        jobs = [Echo.new({"value": i}, queue=self.queue, max_attempts=2) for i in range(count)]
        relays = Relay.async_many(self.instance.name, jobs)
        for relay in relays:
            assert relay.job.id is not None
            self.model[relay.job.id] = ModelJob("available", 0, 2, relay=True)
        return multiple(*(relay.job.id for relay in relays))

    @rule(dead=st.booleans(), limit=st.integers(min_value=1, max_value=3))
    def claim(self, dead: bool, limit: int) -> None:
        node = self.dead if dead else self.alive
        claimed = self._claim(self.conn, node, limit)
        available = [i for i, job in self.model.items() if job.state == "available"]
        assert len(claimed) == min(limit, len(available)), (claimed, available)
        self._apply_claims(claimed, node)

    @rule(limit=st.integers(min_value=1, max_value=3))
    def claim_concurrently(self, limit: int) -> None:
        # The first claim's transaction stays open while the second claims:
        # SKIP LOCKED must give the second claim other jobs, never the same.
        with self.other.transaction():
            first = self._claim(self.other, self.alive, limit)
            second = self._claim(self.conn, self.dead, limit)
        assert not set(first) & set(second), f"jobs claimed twice at once: {first}, {second}"
        self._apply_claims(first, self.alive)
        self._apply_claims(second, self.dead)

    @precondition(lambda self: any(job.state == "executing" for job in self.model.values()))
    @rule(data=st.data(), kind=outcome_kinds, due=st.booleans())
    def finish(self, data: st.DataObject, kind: str, due: bool) -> None:
        running = sorted(i for i, job in self.model.items() if job.state == "executing")
        self.record(data.draw(st.sampled_from(running), label="job_id"), kind, due, stale=False)

    @rule(job_id=jobs, kind=outcome_kinds, due=st.booleans(), stale=st.booleans())
    def record(self, job_id: int, kind: str, due: bool, stale: bool) -> None:
        job = self._job(job_id)
        model = self.model[job_id]
        # A stale outcome names an attempt that is not running; it must change nothing.
        attempt = model.attempt + 1 if stale else model.attempt
        job = Job(
            worker=job.worker,
            args=job.args,
            queue=job.queue,
            max_attempts=job.max_attempts,
            meta=job.meta,
            id=job_id,
            attempt=attempt,
        )
        delay = 0.0 if due else FAR_FUTURE_SECONDS
        if kind == "fail":
            outcome = failed_attempt(
                job_id=job_id,
                queue=job.queue,
                attempt=attempt,
                max_attempts=job.max_attempts,
                error_type="builtins.RuntimeError",
                message="failed by the state machine",
                trace="",
                node_id=model.node or self.alive,
                relay=relay_target(job_id, job.meta, self.prefix),
                delay=delay,
            )
        else:
            returned = {
                "value": "done",
                "snooze": Snooze(delay),
                "discard": Discard("machine"),
                "cancel": Cancel("machine"),
            }[kind]
            outcome = from_return(job, returned, self.prefix, model.node or self.alive)
        self._record(outcome)

        if stale or model.state != "executing":
            return
        if kind == "value":
            model.state = "completed"
        elif kind == "fail":
            model.state = "discarded" if attempt >= model.max_attempts else "retryable"
            model.due = due
        elif kind == "snooze":
            model.state = "scheduled"
            model.max_attempts += 1
            model.due = due
        else:
            model.state = {"discard": "discarded", "cancel": "cancelled"}[kind]

    @rule(job_id=jobs)
    def cancel(self, job_id: int) -> None:
        model = self.model[job_id]
        cancelled = self.instance.cancel_job(job_id, "cancelled by the state machine")
        assert cancelled == (model.state not in FINAL), (model.state, cancelled)
        if cancelled:
            model.state = "cancelled"

    @rule()
    def stage(self) -> None:
        self.conn.execute(
            self.statements.stage, {"limit": 10_000, "channel": self.instance.insert_channel}
        ).fetchall()
        for model in self.model.values():
            if model.state in ("scheduled", "retryable") and model.due:
                model.state = "available"

    @rule()
    def rescue(self) -> None:
        rows = self.conn.execute(
            self.statements.find_orphans,
            {"rescue_after": RESCUE_AFTER_SECONDS, "limit": 10_000},
        ).fetchall()
        ours = [row for row in rows if row[0] in self.model]
        orphans = {row[0] for row in ours}
        expected = {
            i for i, job in self.model.items() if job.state == "executing" and job.node == self.dead
        }
        assert orphans == expected, f"find_orphans returned {orphans}, expected {expected}"
        for job_id, queue, _worker, meta, attempt, max_attempts, attempted_by in ours:
            self._record(
                failed_attempt(
                    job_id=job_id,
                    queue=queue,
                    attempt=attempt,
                    max_attempts=max_attempts,
                    error_type="relay_actors.failures.AttemptLost",
                    message=f"node {attempted_by} stopped; rescued by the state machine",
                    trace="",
                    node_id=str(attempted_by),
                    relay=relay_target(job_id, meta, self.prefix),
                    delay=0.0,
                    retry_state="available",
                )
            )
            model = self.model[job_id]
            model.state = "discarded" if attempt >= max_attempts else "available"

    # Invariants

    @invariant()
    def rows_follow_the_model(self) -> None:
        if not self.model:
            return
        columns = sql.SQL(", ").join(sql.Identifier(name) for name in ("id", *COLUMNS))
        query = sql.SQL("SELECT {} FROM {} WHERE id = ANY(%s)").format(
            columns, sql.Identifier(self.prefix, "jobs")
        )
        rows = {
            row[0]: dict(zip(COLUMNS, row[1:], strict=True))
            for row in self.conn.execute(query, (list(self.model),)).fetchall()
        }
        assert set(rows) == set(self.model), "a job row disappeared"
        for job_id, row in rows.items():
            model = self.model[job_id]
            previous = self.rows.get(job_id)
            if previous is not None and previous["state"] != row["state"]:
                assert row["state"] in LEGAL[previous["state"]], (
                    f"job {job_id}: illegal transition {previous['state']} -> {row['state']}"
                )
            assert row["attempt"] <= row["max_attempts"], f"job {job_id}: {row}"
            assert row["state"] == model.state, f"job {job_id}: row {row}, model {model}"
            assert row["attempt"] == model.attempt, f"job {job_id}: row {row}, model {model}"
            assert row["max_attempts"] == model.max_attempts, f"job {job_id}: {row}"
            if row["state"] in FINAL:
                first = self.final_rows.setdefault(job_id, row)
                assert row == first, f"job {job_id}: final row changed from {first} to {row}"
            self.rows[job_id] = row

    # Helpers

    def _claim(self, conn: psycopg.Connection[Any], node: str, limit: int) -> list[int]:
        params = {"node": node, "queue": self.queue, "limit": limit}
        return [row[0] for row in conn.execute(self.statements.claim, params).fetchall()]

    def _apply_claims(self, claimed: list[int], node: str) -> None:
        for job_id in claimed:
            model = self.model[job_id]
            assert model.state == "available", f"claimed job {job_id} was {model.state}"
            model.state = "executing"
            model.attempt += 1
            model.node = node

    def _job(self, job_id: int) -> Job:
        query = sql.SQL("SELECT worker, args, queue, max_attempts, meta FROM {} WHERE id = %s")
        row = self.conn.execute(
            query.format(sql.Identifier(self.prefix, "jobs")), (job_id,)
        ).fetchone()
        assert row is not None
        worker, args, queue, max_attempts, meta = row
        return Job(worker=worker, args=args, queue=queue, max_attempts=max_attempts, meta=meta)

    def _record(self, outcome: Any) -> None:
        self.acker.tell(Record(outcome))
        self.acker.ask(Sync(), timeout=SYNC_SECONDS).get(timeout=SYNC_SECONDS)


@pytest.fixture
def acker(database_dsn: str, prefix: str) -> Iterator[pykka.ActorRef[Any]]:
    """An acker of a node named "machine", stopped after the test."""
    ref = AckerActor.start(
        dsn=database_dsn,
        prefix=prefix,
        node_id=f"machine-{secrets.token_hex(4)}",
        insert_channel=f"machine_{secrets.token_hex(4)}",
    )
    yield ref
    ref.stop()


@pytest.mark.timeout(240)
def test_job_lifecycle(
    start_instance: Callable[..., Instance],
    acker: pykka.ActorRef[Any],
    database_dsn: str,
    prefix: str,
) -> None:
    # An insert-and-await node: it runs no queue, so only the machine moves jobs.
    JobLifecycle.instance = start_instance(queues={})
    JobLifecycle.acker = acker
    JobLifecycle.dsn = database_dsn
    JobLifecycle.prefix = prefix
    run_state_machine_as_test(JobLifecycle, settings=settings(DATABASE, stateful_step_count=STEPS))
