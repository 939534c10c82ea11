"""Jobs that a node claimed but that none of its executors runs.

A claim can commit on the server while its reply never reaches the producer,
for example when the connection drops at that moment. The jobs then stay
`executing` under a node that keeps heartbeating, so no lifeline rescues them.
The producer finds such jobs by comparing the rows with its running attempts
and adopts those it finds twice, one audit period apart.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from relay_actors import Instance, Job, Ok, Relay, Worker, testing
from relay_actors.actors.messages import AttemptOutcome
from relay_actors.actors.recording import OutcomeWriter
from relay_actors.store import connect
from tests.conftest import wait_until
from tests.faultproxy import LosingProxy, losing_proxy
from tests.integration.test_missed_signals import read_job
from tests.workers import QUICK_QUEUE, SLOW_QUEUE, Echo, Sleep

RESULT_TIMEOUT = 20.0
# Audits run every rescue_after seconds, so an unaccounted job is adopted
# 1 to 2 s after its claim.
FAST_AUDIT = {"heartbeat_interval": 0.2, "rescue_after": 1.0, "poll_interval": 0.2}


# Attempts of the workers below, by job id.
RUNS: Counter[int] = Counter()
# Long enough for several audits of FAST_AUDIT.
HOLD_SECONDS = 4.0


class CountsRuns(Worker[str], queue=QUICK_QUEUE, max_attempts=1):
    """Count the attempt, sleep `args["seconds"]`, and return "done"."""

    def perform(self, job: Job) -> str:
        assert job.id is not None
        RUNS[job.id] += 1
        time.sleep(float(job.args.get("seconds", 0)))
        return "done"


# Events that jobs of WaitsForGate wait for, by the name in their args.
GATES: dict[str, threading.Event] = {}


class WaitsForGate(Worker[str], queue=QUICK_QUEUE, max_attempts=1):
    """Wait until the test sets the event of GATES named by `args["gate"]`."""

    def perform(self, job: Job) -> str:
        GATES[job.args["gate"]].wait(RESULT_TIMEOUT)
        return "opened"


@pytest.fixture(autouse=True)
def fresh_runs() -> None:
    """Forget the runs of earlier tests, whose schemas numbered their jobs from 1 too."""
    RUNS.clear()


# Requested before start_instance, so that instances stop before the proxy closes.
@pytest.fixture
def proxy(database_dsn: str) -> Iterator[LosingProxy]:
    with losing_proxy(database_dsn) as started:
        yield started


def test_lost_claim_reply_job_runs(
    proxy: LosingProxy,
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    """The claim commits, its reply is lost, and the job still runs once, on its first attempt."""
    caller = start_instance(queues={})
    worker = start_instance(dsn=proxy.dsn, queues={QUICK_QUEUE: 2}, **FAST_AUDIT)
    marker = f"lose-{secrets.token_hex(8)}"
    proxy.lose_reply_containing(marker.encode())

    relay = Relay.async_(caller.name, Echo.new({"value": marker}))
    assert proxy.lost.wait(RESULT_TIMEOUT), "no reply carried the job's arguments"
    row = read_job(db, prefix, relay.job.id)
    # The claim committed. The audit may already have adopted and run the job
    # if this thread was slow to get here.
    assert row["state"] in ("executing", "completed")
    assert (row["attempt"], row["attempted_by"]) == (1, worker.node_id)

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(marker)
    row = read_job(db, prefix, relay.job.id)
    assert (row["state"], row["attempt"]) == ("completed", 1)
    statistics = worker.statistics()[f"producer {QUICK_QUEUE}"]
    assert statistics["adopted"] == 1


def test_long_attempt_never_adopted(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    """A job that runs through many audits is accounted for, so it runs once."""
    caller = start_instance(queues={})
    worker = start_instance(queues={SLOW_QUEUE: 1}, **FAST_AUDIT)
    relay = Relay.async_(caller.name, Sleep.new({"seconds": 4, "value": "slept"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("slept")
    row = read_job(db, prefix, relay.job.id)
    assert (row["state"], row["attempt"]) == ("completed", 1)
    assert worker.statistics()[f"producer {SLOW_QUEUE}"]["adopted"] == 0


def test_outcome_held_by_acker_not_adopted(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    database_dsn: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outcome whose row another session locks waits with the acker, and its job runs once.

    The producer's write times out and the acker retries it. Meanwhile the
    audit finds the job executing with no running attempt, and must leave it alone.
    """
    monkeypatch.setattr(connect, "STATEMENT_TIMEOUT_MS", 500)
    caller = start_instance(queues={})
    worker = start_instance(queues={QUICK_QUEUE: 2}, **FAST_AUDIT)
    # Long enough for this thread to lock the row before the attempt ends.
    relay = Relay.async_(caller.name, CountsRuns.new({"seconds": 2.0}))
    assert relay.job.id is not None
    wait_until(lambda: RUNS[relay.job.id] == 1, timeout=RESULT_TIMEOUT, message="job never ran")

    with psycopg.connect(database_dsn) as locker:
        locker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR SHARE").format(
                sql.Identifier(prefix, "jobs")
            ),
            (relay.job.id,),
        )
        time.sleep(HOLD_SECONDS)
        locker.rollback()

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("done")
    assert RUNS[relay.job.id] == 1
    assert read_job(db, prefix, relay.job.id)["attempt"] == 1
    assert worker.statistics()[f"producer {QUICK_QUEUE}"]["adopted"] == 0
    # The producer's write timed out, so the acker wrote the outcome. The
    # acker counts and unlists it just after the commit that wakes the caller.
    wait_until(
        lambda: worker.statistics()["acker"]["recorded"] == 1 and len(worker.unrecorded) == 0,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"acker {worker.statistics()['acker']}, unwritten {len(worker.unrecorded)}",
    )


def test_drained_jobs_not_adopted(start_instance: Callable[..., Instance]) -> None:
    """Jobs that drain_queue claimed wait on the caller's thread, and each runs once.

    The node runs the same queue, with its one executor kept busy, so its
    audits see the drained jobs executing with no running attempt.
    """
    node = start_instance(queues={QUICK_QUEUE: 1}, **FAST_AUDIT)
    gate = secrets.token_hex(4)
    GATES[gate] = threading.Event()
    blocker = Relay.async_(node.name, WaitsForGate.new({"gate": gate}))
    wait_until(
        lambda: node.statistics()[f"producer {QUICK_QUEUE}"]["busy"] == 1,
        timeout=RESULT_TIMEOUT,
        message="the blocking job never started",
    )
    relays = [Relay.async_(node.name, CountsRuns.new({"seconds": 1.0})) for _ in range(4)]
    try:
        assert testing.drain_queue(QUICK_QUEUE, instance=node.name) == {"completed": 4}
    finally:
        GATES[gate].set()
    assert Relay.await_(blocker, timeout=RESULT_TIMEOUT) == Ok("opened")
    assert [RUNS[relay.job.id or 0] for relay in relays] == [1, 1, 1, 1]
    assert node.statistics()[f"producer {QUICK_QUEUE}"]["adopted"] == 0
    wait_until(
        lambda: len(node.unrecorded) == 0,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"{len(node.unrecorded)} outcomes still listed as unwritten",
    )


def test_outcome_given_up_is_adopted(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An outcome that the acker gives up on leaves its job to the audit, which runs it again.

    The first four writes of the job's outcome fail with an error that is not
    a connection problem: the producer's, the acker's batch, the acker's
    write of that outcome alone, and of the failed attempt that replaces it.
    """
    failures = {"left": 4}
    target: dict[str, int | None] = {"job_id": None}

    def failing(write: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(
            self: OutcomeWriter, conn: Any, outcomes: list[AttemptOutcome], **claim: Any
        ) -> Any:
            if failures["left"] and any(o.job_id == target["job_id"] for o in outcomes):
                failures["left"] -= 1
                raise psycopg.errors.DataException("write refused by the test")
            return write(self, conn, outcomes, **claim)

        return wrapper

    monkeypatch.setattr(OutcomeWriter, "write", failing(OutcomeWriter.write))
    monkeypatch.setattr(OutcomeWriter, "write_and_claim", failing(OutcomeWriter.write_and_claim))
    caller = start_instance(queues={})
    worker = start_instance(queues={QUICK_QUEUE: 2}, **FAST_AUDIT)

    relay = Relay.async_(caller.name, CountsRuns.new({"seconds": 0.5}))
    target["job_id"] = relay.job.id
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("done")
    assert failures["left"] == 0
    assert relay.job.id is not None
    assert RUNS[relay.job.id] == 2
    assert read_job(db, prefix, relay.job.id)["attempt"] == 1
    assert worker.statistics()[f"producer {QUICK_QUEUE}"]["adopted"] == 1
    wait_until(
        lambda: len(worker.unrecorded) == 0,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"{len(worker.unrecorded)} outcomes still listed as unwritten",
    )
