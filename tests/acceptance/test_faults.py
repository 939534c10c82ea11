"""Faults seen by a caller in the test process and worker nodes in their own processes.

The faults are a killed node, a listener connection that the test
terminates, a paused PostgreSQL server and crashed actors. Every await must
end with a defined result by its timeout plus `AWAIT_SLACK_SECONDS`, and no
result may be lost.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pykka
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from relay_actors import Error, Instance, JobError, Ok, Reason, Relay
from relay_actors.actors.acker import RECORD_FAILED_TYPE
from relay_actors.actors.listener import ListenerActor
from relay_actors.embedded import EmbeddedServer
from relay_actors.failures import AttemptLost
from relay_actors.names import relay_channel
from tests.acceptance.test_worker_nodes import node_id_of
from tests.conftest import TEST_DSN_VARIABLE, NodeProcess, wait_until
from tests.workers import (
    FAULT_QUEUE,
    QUICK_QUEUE,
    SINGLE_QUEUE,
    SLOW_QUEUE,
    AwaitsInner,
    BlocksFirstAttempt,
    DiscardsWithNul,
    Echo,
    FailsOnce,
    Sleep,
    WaitsForFile,
)

# How late an await may return after its timeout: the tolerance of every
# timing assert here, for a loaded machine with two cores.
AWAIT_SLACK_SECONDS = 1.0
# Seconds for a result from another process, which may still be warming up.
RESULT_TIMEOUT = 20.0
ATTEMPT_LOST_TYPE = f"{AttemptLost.__module__}.{AttemptLost.__qualname__}"
# Worker flags for nodes whose jobs must be rescued within about a second.
RESCUE_OPTIONS = ("--heartbeat-interval", "0.2", "--rescue-after", "1", "--grace", "1")
# Staging every 0.2 s makes a retry due in 0.1 s run within about 0.3 s.
FAST_POLL_OPTIONS = ("--poll-interval", "0.2")

OUTAGE_QUEUE = "outage"
OUTAGE_RELAYS = 1000
OUTAGE_CALLER_THREADS = 4
# The safety-net poll runs once at start, then not again within the test, so
# only the re-read after the listener reconnects can deliver the results.
OUTAGE_SAFETY_NET_SECONDS = 60.0
OUTAGE_AWAIT_TIMEOUT = 20.0


def timed_await(
    relays: Relay[Any] | Sequence[Relay[Any]], timeout: float, *, with_retries: bool = False
) -> tuple[Any, float]:
    """Await one relay, or many by one deadline, and return the results with the seconds taken."""
    started = time.monotonic()
    if isinstance(relays, Relay):
        result: Any = Relay.await_(relays, timeout=timeout, with_retries=with_retries)
    else:
        result = Relay.await_many(relays, timeout=timeout, with_retries=with_retries)
    return result, time.monotonic() - started


def assert_ended_in_time(seconds: float, timeout: float) -> None:
    assert seconds <= timeout + AWAIT_SLACK_SECONDS, (
        f"await took {seconds:.2f} s, past its timeout of {timeout} s plus {AWAIT_SLACK_SECONDS} s"
    )


def assert_defined(result: Any) -> None:
    """Assert that an await returned `Ok`, or `Error` with a `Reason` or a `JobError`."""
    assert isinstance(result, Ok | Error), f"await returned {result!r}"
    if isinstance(result, Error):
        assert isinstance(result.reason, Reason | JobError), f"undefined reason {result!r}"


def waiting_count(relay: Relay[Any]) -> int:
    """Return the number of open awaits in the relay's mailbox."""
    statistics = relay.mailbox.proxy().statistics().get(timeout=5)
    return int(statistics["waiting"])


def job_rows(
    conn: psycopg.Connection[Any], schema: str, job_ids: Sequence[int | None]
) -> dict[int, tuple[Any, ...]]:
    """Return (state, attempt, attempted_by, errors) of each job, by id."""
    query = sql.SQL(
        "SELECT id, state, attempt, attempted_by, errors FROM {} WHERE id = ANY(%s)"
    ).format(sql.Identifier(schema, "jobs"))
    return {row[0]: row[1:] for row in conn.execute(query, (list(job_ids),)).fetchall()}


def report(test: str, **figures: object) -> None:
    """Print a test's figures on one line, which pytest shows with -s or on failure."""
    listed = ", ".join(f"{name}={value}" for name, value in figures.items())
    print(f"\n{test}: {listed}")


def test_killed_node_job_rescued(
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    doomed = start_node({FAULT_QUEUE: 2}, node="doomed", options=RESCUE_OPTIONS)
    doomed_id = node_id_of(doomed)
    caller = start_instance(queues={})
    retried = Relay.async_(caller.name, BlocksFirstAttempt.new({"block_seconds": 60}))
    single = Relay.async_(caller.name, BlocksFirstAttempt.new({"block_seconds": 60}))
    job_ids = [retried.job.id, single.job.id]

    def claimed_by_doomed() -> bool:
        rows = job_rows(db, prefix, job_ids).values()
        return [(state, by) for state, _, by, _ in rows] == [("executing", doomed_id)] * 2

    wait_until(
        claimed_by_doomed,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"jobs not executing on {doomed_id}: {job_rows(db, prefix, job_ids)}",
    )
    # The rescuer starts while the doomed node still heartbeats, so it may
    # rescue only after the kill.
    rescuer = start_node({FAULT_QUEUE: 2}, node="rescuer", options=RESCUE_OPTIONS)
    rescuer_id = node_id_of(rescuer)

    with ThreadPoolExecutor(2) as pool:
        through_retries = pool.submit(timed_await, retried, RESULT_TIMEOUT, with_retries=True)
        first_outcome = pool.submit(timed_await, single, RESULT_TIMEOUT, with_retries=False)
        wait_until(
            lambda: waiting_count(retried) == 2,
            timeout=5.0,
            message="the two awaits never reached the caller's mailbox",
        )
        killed_at = time.monotonic()
        doomed.process.kill()
        doomed.process.wait(timeout=10)
        ok, ok_seconds = through_retries.result(timeout=RESULT_TIMEOUT + 5)
        lost, lost_seconds = first_outcome.result(timeout=RESULT_TIMEOUT + 5)
    recovered_after_kill = time.monotonic() - killed_at

    report(
        "killed node",
        relays_pending=2,
        relays_recovered=(ok == Ok("attempt 2")) + isinstance(lost, Error),
        longest_await=f"{max(ok_seconds, lost_seconds):.2f}s",
        after_kill=f"{recovered_after_kill:.2f}s",
    )
    assert ok == Ok("attempt 2")
    assert_ended_in_time(ok_seconds, RESULT_TIMEOUT)
    assert isinstance(lost, Error)
    assert isinstance(lost.reason, JobError)
    assert lost.reason.type == ATTEMPT_LOST_TYPE
    assert lost.reason.attempt == 1
    assert lost.reason.node == doomed_id
    assert f"rescued by node {rescuer_id}" in lost.reason.message
    assert_ended_in_time(lost_seconds, RESULT_TIMEOUT)

    # The job awaited without retries went on to its second attempt too.
    assert Relay.await_(single, timeout=RESULT_TIMEOUT, with_retries=True) == Ok("attempt 2")
    for state, attempt, attempted_by, errors in job_rows(db, prefix, job_ids).values():
        assert state == "completed"
        assert attempt == 2
        assert attempted_by == rescuer_id
        assert [error["type"] for error in errors] == [ATTEMPT_LOST_TYPE]
        assert errors[0]["node"] == doomed_id


class ListenerOutage:
    """Cuts one node's listener off the test database, from `begin()` to `end()`.

    `begin()` makes the database refuse new connections (ALLOW_CONNECTIONS
    false, set from another database of the server), then terminates the
    backends named `application_name`. Connections that are already open
    keep working, so only the listener is down, and its reconnects fail until
    `end()` allows connections again.
    """

    def __init__(self, server_dsn: str, database_dsn: str, application_name: str) -> None:
        self._server_dsn = server_dsn
        self._database = str(conninfo_to_dict(database_dsn)["dbname"])
        self._application_name = application_name
        self._admin: psycopg.Connection[Any] | None = None
        self._started_at = 0.0
        self.terminated = 0
        self.seconds = 0.0

    def begin(self) -> None:
        self._admin = psycopg.connect(self._server_dsn, autocommit=True)
        self._started_at = time.monotonic()
        try:
            self._allow_connections(False)
            row = self._admin.execute(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = %s",
                (self._application_name, self._database),
            ).fetchone()
        except BaseException:
            self._admin.close()
            self._admin = None
            raise
        self.terminated = int(row[0]) if row else 0

    def end(self) -> None:
        if self._admin is None:
            return
        try:
            self._allow_connections(True)
        finally:
            self._admin.close()
            self._admin = None
        self.seconds = time.monotonic() - self._started_at

    def _allow_connections(self, allow: bool) -> None:
        assert self._admin is not None
        statement = sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
            sql.Identifier(self._database), sql.SQL("true" if allow else "false")
        )
        self._admin.execute(statement)


@pytest.mark.timeout(120)
def test_listener_outage_loses_no_result(
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    database_dsn: str,
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    gate = tmp_path / "gate"
    executors = 10
    start_node({OUTAGE_QUEUE: executors}, options=FAST_POLL_OPTIONS)
    caller = start_instance(queues={}, safety_net_interval=OUTAGE_SAFETY_NET_SECONDS)
    # A first job opens the node's claim and record connections, which must
    # exist before the database refuses new ones.
    warm_up = Relay.async_(caller.name, Echo.new({"value": "warm"}, queue=OUTAGE_QUEUE))
    assert Relay.await_(warm_up, timeout=RESULT_TIMEOUT) == Ok("warm")

    # Gate jobs hold every executor, so the relays below stay pending until the outage.
    gates = Relay.async_many(
        caller.name,
        [
            WaitsForFile.new({"path": str(gate), "seconds": 60}, queue=OUTAGE_QUEUE)
            for _ in range(executors)
        ],
    )
    gate_ids = [relay.job.id for relay in gates]
    wait_until(
        lambda: {row[0] for row in job_rows(db, prefix, gate_ids).values()} == {"executing"},
        timeout=RESULT_TIMEOUT,
        message="the gate jobs never took every executor",
    )

    per_thread = OUTAGE_RELAYS // OUTAGE_CALLER_THREADS
    inserted = threading.Barrier(OUTAGE_CALLER_THREADS + 1, timeout=30)

    def insert_and_await(first: int) -> tuple[list[Any], float]:
        values = range(first, first + per_thread)
        jobs = [Echo.new({"value": value}, queue=OUTAGE_QUEUE) for value in values]
        relays = Relay.async_many(caller.name, jobs)
        inserted.wait()
        return timed_await(relays, OUTAGE_AWAIT_TIMEOUT)

    def completed() -> int:
        query = sql.SQL("SELECT count(*) FROM {} WHERE state = 'completed'").format(
            sql.Identifier(prefix, "jobs")
        )
        row = db.execute(query).fetchone()
        return int(row[0]) if row else 0

    # connect() names each connection "relay_actors <role> <node id>", cut to 63 bytes.
    listener_name = f"relay_actors listener {caller.node_id}"[:63]
    server_dsn = os.environ.get(TEST_DSN_VARIABLE) or make_conninfo(database_dsn, dbname="postgres")
    outage = ListenerOutage(server_dsn, database_dsn, listener_name)
    all_jobs = 1 + executors + OUTAGE_RELAYS
    with ThreadPoolExecutor(OUTAGE_CALLER_THREADS) as pool:
        awaits = [
            pool.submit(insert_and_await, first) for first in range(0, OUTAGE_RELAYS, per_thread)
        ]
        inserted.wait()
        outage.begin()
        try:
            wait_until(
                lambda: not caller.statistics()["listener"]["connected"],
                timeout=5.0,
                message="the caller's listener stayed connected",
            )
            delivered_before = caller.statistics()["listener"]["delivered"]
            gate.touch()
            wait_until(
                lambda: completed() == all_jobs,
                timeout=60.0,
                message=lambda: f"{completed()} of {all_jobs} jobs completed",
            )
            delivered_during = caller.statistics()["listener"]["delivered"] - delivered_before
        finally:
            outage.end()
        finished = [future.result(timeout=OUTAGE_AWAIT_TIMEOUT + 10) for future in awaits]

    results = [result for part, _ in finished for result in part]
    longest = max(seconds for _, seconds in finished)
    report(
        "listener outage",
        relays_pending=OUTAGE_RELAYS,
        relays_recovered=sum(result == Ok(value) for value, result in enumerate(results)),
        notified_during_outage=delivered_during,
        longest_await=f"{longest:.2f}s",
        outage=f"{outage.seconds:.2f}s",
        terminated=outage.terminated,
        listener_connects=caller.statistics()["listener"]["connects"],
    )
    assert outage.terminated == 1
    assert delivered_during == 0
    assert results == [Ok(value) for value in range(OUTAGE_RELAYS)]
    for _, seconds in finished:
        assert_ended_in_time(seconds, OUTAGE_AWAIT_TIMEOUT)


@contextmanager
def paused(server: EmbeddedServer) -> Iterator[None]:
    """Stop the server process on entry and start it again on exit, even on failure."""
    server.pause()
    try:
        yield
    finally:
        server.resume()


@pytest.mark.timeout(120)
def test_server_outage_defined_results(
    own_server: EmbeddedServer,
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    prefix: str,
) -> None:
    node = start_node(
        {SLOW_QUEUE: 4, QUICK_QUEUE: 2}, dsn=own_server.dsn, options=FAST_POLL_OPTIONS
    )
    node_id = node_id_of(node)
    caller = start_instance(dsn=own_server.dsn, queues={}, safety_net_interval=1.0)
    before = Relay.async_(caller.name, Echo.new({"value": "before"}))
    assert Relay.await_(before, timeout=RESULT_TIMEOUT) == Ok("before")

    spanning = Relay.async_many(
        caller.name, [Sleep.new({"seconds": 1.0, "value": i}) for i in range(4)]
    )
    spanning_ids = [relay.job.id for relay in spanning]
    with psycopg.connect(own_server.dsn, autocommit=True) as conn:
        wait_until(
            lambda: (
                {row[0] for row in job_rows(conn, prefix, spanning_ids).values()} == {"executing"}
            ),
            timeout=RESULT_TIMEOUT,
            message="the Sleep jobs never started executing",
        )

    outage_timeout = 15.0
    with ThreadPoolExecutor(len(spanning)) as pool:
        spanning_awaits = [pool.submit(timed_await, relay, outage_timeout) for relay in spanning]
        with paused(own_server):
            # The jobs finish 1 s into this 2 s outage, so their outcomes cannot be recorded yet.
            short, short_seconds = timed_await(spanning[0], 2.0)
            cached, cached_seconds = timed_await(before, 1.0)
            with pytest.raises(psycopg.OperationalError):
                Relay.async_(caller.name, Echo.new({"value": "during"}))
        finished = [future.result(timeout=outage_timeout + 10) for future in spanning_awaits]

    report(
        "server outage",
        relays_pending=len(spanning),
        relays_recovered=sum(isinstance(result, Ok) for result, _ in finished),
        longest_await=f"{max(seconds for _, seconds in finished):.2f}s",
    )
    assert short == Error(Reason.TIMEOUT)
    assert_ended_in_time(short_seconds, 2.0)
    assert cached == Ok("before")
    assert_ended_in_time(cached_seconds, 1.0)
    for index, (result, seconds) in enumerate(finished):
        assert_defined(result)
        assert_ended_in_time(seconds, outage_timeout)
        assert result == Ok(index), f"relay {index} lost its result across the outage"

    # The same node process and caller instance serve new jobs after the outage.
    after = Relay.async_many(caller.name, [Echo.new({"value": i}) for i in range(5)])
    results, seconds = timed_await(after, RESULT_TIMEOUT)
    assert results == [Ok(i) for i in range(5)]
    assert_ended_in_time(seconds, RESULT_TIMEOUT)
    assert node.process.poll() is None
    with psycopg.connect(own_server.dsn, autocommit=True) as conn:
        rows = job_rows(conn, prefix, [relay.job.id for relay in after]).values()
    assert {attempted_by for _, _, attempted_by, _ in rows} == {node_id}


def test_retry_after_failure(
    start_instance: Callable[..., Instance], start_node: Callable[..., NodeProcess]
) -> None:
    node = start_node({QUICK_QUEUE: 2}, options=FAST_POLL_OPTIONS)
    caller = start_instance(queues={})

    first = Relay.async_(caller.name, FailsOnce.new({}))
    failed, failed_seconds = timed_await(first, RESULT_TIMEOUT)
    assert isinstance(failed, Error)
    assert isinstance(failed.reason, JobError)
    assert failed.reason.type == "builtins.RuntimeError"
    assert failed.reason.message == "first attempt fails"
    assert failed.reason.attempt == 1
    assert failed.reason.node == node_id_of(node)
    assert_ended_in_time(failed_seconds, RESULT_TIMEOUT)

    second = Relay.async_(caller.name, FailsOnce.new({}))
    succeeded, succeeded_seconds = timed_await(second, RESULT_TIMEOUT, with_retries=True)
    assert succeeded == Ok("succeeded on attempt 2")
    assert_ended_in_time(succeeded_seconds, RESULT_TIMEOUT)

    # The first relay's job was retried as well, so awaiting it again returns its final outcome.
    again, again_seconds = timed_await(first, RESULT_TIMEOUT, with_retries=True)
    assert again == Ok("succeeded on attempt 2")
    assert_ended_in_time(again_seconds, RESULT_TIMEOUT)


def test_nested_await_ends_by_deadline(
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    # One executor: the inner job cannot start until the outer job returns.
    start_node({SINGLE_QUEUE: 1})
    caller = start_instance(queues={})
    inner_timeout = 1.0
    outer = Relay.async_(caller.name, AwaitsInner.new({"inner_timeout": inner_timeout}))
    result, seconds = timed_await(outer, RESULT_TIMEOUT)

    assert isinstance(result, Ok), f"the outer job did not complete: {result!r}"
    assert result.value["inner"] == Reason.TIMEOUT.value
    assert inner_timeout <= result.value["waited"] <= inner_timeout + AWAIT_SLACK_SECONDS
    assert_ended_in_time(seconds, RESULT_TIMEOUT)
    inner_id = result.value["inner_job_id"]
    wait_until(
        lambda: job_rows(db, prefix, [inner_id])[inner_id][0] == "completed",
        timeout=RESULT_TIMEOUT,
        message="the inner job never ran after the outer job freed the executor",
    )


def only_actor(actor_class: type[pykka.Actor]) -> pykka.ActorRef[Any]:
    """Return the one running actor of `actor_class` in this process."""
    refs = pykka.ActorRegistry.get_by_class(actor_class)
    assert len(refs) == 1, f"expected one {actor_class.__name__} in this process, found {refs}"
    return refs[0]


def test_restarted_listener_rechecks(
    start_instance: Callable[..., Instance],
    start_node: Callable[..., NodeProcess],
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    start_node({QUICK_QUEUE: 2}, options=FAST_POLL_OPTIONS)
    caller = start_instance(queues={}, safety_net_interval=OUTAGE_SAFETY_NET_SECONDS)
    warm_up = Relay.async_(caller.name, Echo.new({"value": "warm"}))
    assert Relay.await_(warm_up, timeout=RESULT_TIMEOUT) == Ok("warm")

    def listener_restarts() -> int:
        return int(caller.statistics()["restarts"].get("listener", 0))

    # The supervisor checks its actors once a second. Stopping the listener
    # right after a restart leaves about a second before the next one.
    only_actor(ListenerActor).stop()
    wait_until(
        lambda: listener_restarts() == 1,
        timeout=5.0,
        message="the supervisor never restarted the listener",
    )
    only_actor(ListenerActor).stop()
    relay = Relay.async_(caller.name, Echo.new({"value": "while down"}))
    wait_until(
        lambda: [row[0] for row in job_rows(db, prefix, [relay.job.id]).values()] == ["completed"],
        timeout=5.0,
        message="the job never completed",
    )
    assert listener_restarts() == 1, "the listener came back before the job completed"

    # Its notification reached no listener, so the restarted listener must read the row.
    result, seconds = timed_await(relay, 5.0)
    assert result == Ok("while down")
    assert_ended_in_time(seconds, 5.0)


def test_listener_drops_malformed_notification(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(queues={QUICK_QUEUE: 2})
    # Any session of the database may notify a node's relay channel. This
    # entry's status is a JSON array instead of a string.
    malformed = '1[["mailbox", "ref", 1, ["ok"], 1, 1, null]]'
    db.execute("SELECT pg_notify(%s, %s)", (relay_channel(prefix, instance.node_id), malformed))

    wait_until(
        lambda: instance.statistics().get("listener", {}).get("dropped", 0) == 1,
        timeout=5.0,
        message=lambda: f"malformed notification not dropped; statistics: {instance.statistics()}",
    )
    assert instance.statistics()["restarts"] == {}
    relay = Relay.async_(instance.name, Echo.new({"value": "still routed"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("still routed")


def test_unstorable_outcome_loses_no_other(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(queues={QUICK_QUEUE: 4})
    jobs = [DiscardsWithNul.new({}), *(Echo.new({"value": i}) for i in range(3))]
    relays = Relay.async_many(instance.name, jobs)
    # The jobs run at once on an idle local instance.
    timeout = 5.0
    results, seconds = timed_await(relays, timeout)

    assert results[1:] == [Ok(i) for i in range(3)]
    assert_defined(results[0])
    assert results[0] != Error(Reason.TIMEOUT), "the bad outcome left its job without one"
    assert isinstance(results[0], Error)
    assert isinstance(results[0].reason, JobError)
    assert results[0].reason.type == RECORD_FAILED_TYPE
    rows = job_rows(db, prefix, [r.job.id for r in relays])
    states = [row[0] for row in rows.values()]
    assert "executing" not in states
    assert rows[relays[0].job.id][0] == "discarded"
    assert_ended_in_time(seconds, timeout)


def test_insert_after_server_restart(
    own_server: EmbeddedServer, start_instance: Callable[..., Instance]
) -> None:
    instance = start_instance(dsn=own_server.dsn, poll_interval=0.2)
    before = Relay.async_(instance.name, Echo.new({"value": "before"}))
    assert Relay.await_(before, timeout=RESULT_TIMEOUT) == Ok("before")
    # Caller threads that insert at the same time leave several idle
    # connections in the pool. Holding three at once does the same.
    with instance.pool.connection(), instance.pool.connection(), instance.pool.connection():
        pass

    own_server.pause()
    own_server.resume()

    after = Relay.async_(instance.name, Echo.new({"value": "after"}))
    result, seconds = timed_await(after, RESULT_TIMEOUT)
    assert result == Ok("after")
    assert_ended_in_time(seconds, RESULT_TIMEOUT)
