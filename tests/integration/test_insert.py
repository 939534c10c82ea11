"""Inserting relays: validation before any insert, batches, instance lookup and transactions."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from relay_actors import (
    ConfigurationError,
    Error,
    Instance,
    InstanceNotFoundError,
    InvalidJobError,
    Ok,
    Reason,
    Relay,
    RelayNotCommitted,
)
from tests.conftest import count_jobs
from tests.workers import Echo

RESULT_TIMEOUT = 10.0
# Seconds for a relay whose row never existed to be found missing: several
# periods of the instance's safety-net poll (poll_interval, 1 s by default).
NOT_FOUND_TIMEOUT = 5.0


@pytest.fixture
def instance(start_instance: Callable[..., Instance]) -> Instance:
    return start_instance()


def invalid_job(**changes: Any) -> Any:
    """Return an Echo job with `changes` applied after validation, as a careless caller could."""
    return dataclasses.replace(Echo.new({"value": 1}), **changes)


INVALID_JOBS = [
    pytest.param({"priority": 10}, "priority", id="priority-10"),
    pytest.param({"priority": -1}, "priority", id="priority-minus-1"),
    pytest.param({"max_attempts": 0}, "max_attempts", id="max-attempts-0"),
    pytest.param({"queue": ""}, "queue", id="queue-empty"),
    pytest.param({"args": ["not", "a", "dict"]}, "args", id="args-list"),
    pytest.param({"args": {"value": object()}}, "args", id="args-not-json"),
    pytest.param({"tags": (1, 2)}, "tags", id="tags-not-str"),
    pytest.param({"meta": "text"}, "meta", id="meta-str"),
    # PostgreSQL rejects surrogate code points in jsonb, which would fail the
    # whole insert statement, and with it every other caller's job in it.
    pytest.param({"args": {"name": "file-\udcff"}}, "args", id="args-surrogate"),
    pytest.param({"tags": ("file-\udcff",)}, "tags", id="tags-surrogate"),
    pytest.param({"worker": "tests.workers.\ud800"}, "worker", id="worker-surrogate"),
]


@pytest.mark.parametrize(("changes", "field"), INVALID_JOBS)
def test_async_rejects_invalid_job(
    instance: Instance,
    db: psycopg.Connection[Any],
    prefix: str,
    changes: dict[str, Any],
    field: str,
) -> None:
    with pytest.raises(InvalidJobError) as raised:
        Relay.async_(instance.name, invalid_job(**changes))
    assert [problem.split(" ", 1)[0] for problem in raised.value.problems] == [field]
    assert count_jobs(db, prefix) == 0


def test_async_rejects_non_job(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    with pytest.raises(InvalidJobError, match=r"Worker\.new"):
        Relay.async_(instance.name, {"worker": "tests.workers.Echo", "args": {}})
    assert count_jobs(db, prefix) == 0


def test_async_many_inserts_nothing_invalid(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    jobs = [
        Echo.new({"value": 0}),
        invalid_job(priority=10),
        Echo.new({"value": 2}),
        invalid_job(queue=""),
    ]
    with pytest.raises(InvalidJobError) as raised:
        Relay.async_many(instance.name, jobs)
    assert count_jobs(db, prefix) == 0
    assert len(raised.value.problems) == 2
    assert raised.value.problems[0].startswith("job 1: priority")
    assert raised.value.problems[1].startswith("job 3: queue")


def test_async_many_rejects_single_job(instance: Instance) -> None:
    with pytest.raises(InvalidJobError, match="list of jobs"):
        Relay.async_many(instance.name, Echo.new({"value": 1}))


def test_async_many_keeps_input_order(instance: Instance) -> None:
    count = 200
    relays = Relay.async_many(instance.name, [Echo.new({"value": i}) for i in range(count)])
    assert [relay.job.args["value"] for relay in relays] == list(range(count))
    assert len({relay.job.id for relay in relays}) == count
    assert len({relay.ref for relay in relays}) == count
    assert None not in {relay.job.id for relay in relays}


def test_async_many_ids_match_rows(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relays = Relay.async_many(
        instance.name, [Echo.new({"value": i}, tags=[f"n{i}"]) for i in range(50)]
    )
    rows = dict(
        db.execute(
            psycopg.sql.SQL("SELECT id, args ->> 'value' FROM {}").format(
                psycopg.sql.Identifier(prefix, "jobs")
            )
        ).fetchall()
    )
    assert {relay.job.id: str(relay.job.args["value"]) for relay in relays} == rows


def test_async_many_results_in_order(instance: Instance) -> None:
    relays = Relay.async_many(instance.name, [Echo.new({"value": i}) for i in range(200)])
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(200)]


def test_async_many_empty_list(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    assert Relay.async_many(instance.name, []) == []
    assert count_jobs(db, prefix) == 0


def test_keyword_instance_for_many(instance: Instance) -> None:
    relays = Relay.async_many([Echo.new({"value": 1})], instance=instance.name)
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(1)]


def test_instance_name_given_twice(instance: Instance) -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        Relay.async_(instance.name, Echo.new({"value": 1}), instance=instance.name)


def test_unknown_instance_name_raises() -> None:
    with pytest.raises(InstanceNotFoundError, match="unknown-name"):
        Relay.async_("unknown-name", Echo.new({"value": 1}))


def test_unknown_instance_says_fix() -> None:
    with pytest.raises(InstanceNotFoundError, match=r"relay_actors\.start"):
        Relay.async_("unknown-name", Echo.new({"value": 1}))


def test_stopped_instance_raises(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    instance.stop()
    with pytest.raises(InstanceNotFoundError):
        Relay.async_(instance.name, Echo.new({"value": 1}))


def test_no_plugin_raises_configuration_error(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    instance = start_instance(plugins=[])
    with pytest.raises(ConfigurationError, match=r"plugins=\[Relay\]"):
        Relay.async_(instance.name, Echo.new({"value": 1}))
    assert count_jobs(db, prefix) == 0


def test_unknown_plugin_rejected(start_instance: Callable[..., Instance]) -> None:
    with pytest.raises(ConfigurationError, match="unknown plugin"):
        start_instance(plugins=[object()])


def test_insert_in_caller_transaction(
    instance: Instance, database_dsn: str, db: psycopg.Connection[Any], prefix: str
) -> None:
    with psycopg.connect(database_dsn) as conn:
        relay = Relay.async_(instance.name, Echo.new({"value": "committed"}), conn=conn)
        assert count_jobs(db, prefix) == 0
        conn.commit()
    assert count_jobs(db, prefix) == 1
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("committed")


def test_rolled_back_insert_not_found(
    instance: Instance, database_dsn: str, db: psycopg.Connection[Any], prefix: str
) -> None:
    with psycopg.connect(database_dsn) as conn:
        relay = Relay.async_(instance.name, Echo.new({"value": "lost"}), conn=conn)
        conn.rollback()
    assert count_jobs(db, prefix) == 0
    assert Relay.await_(relay, timeout=NOT_FOUND_TIMEOUT) == Error(Reason.NOT_FOUND)


def test_await_before_commit_raises(instance: Instance, database_dsn: str) -> None:
    with psycopg.connect(database_dsn) as conn:
        relay = Relay.async_(instance.name, Echo.new({"value": "pending"}), conn=conn)
        with pytest.raises(RelayNotCommitted):
            Relay.await_(relay, timeout=1.0)
        conn.rollback()
