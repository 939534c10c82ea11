"""Every kind of result, end to end through PostgreSQL, on an in-process instance."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg import sql

from relay_actors import ConfigurationError, Error, Instance, JobError, Ok, Reason, Relay, codec
from relay_actors.backoff import MAX_DELAY_SECONDS
from tests.assertions import assert_same
from tests.conftest import job_state, wait_until
from tests.values import POINT_TAG, Point
from tests.workers import (
    Blob,
    Canceller,
    Discarder,
    Double,
    Echo,
    Fail,
    FailWithBackoff,
    Flaky,
    Rich,
    Sleep,
    Snoozer,
    Unencodable,
    rich_value,
)

# Seconds an await may take for a job that runs at once on an idle local instance.
RESULT_TIMEOUT = 10.0


@pytest.fixture
def instance(start_instance: Callable[..., Instance]) -> Instance:
    return start_instance()


@pytest.mark.parametrize(
    "value",
    [3, None, "text", [1, "two", None], {"nested": {"list": [True, False]}}, 1.5, 2**70],
    ids=["int", "none", "str", "list", "dict", "float", "big-int"],
)
def test_ok_result(instance: Instance, value: Any) -> None:
    relay = Relay.async_(instance.name, Echo.new({"value": value}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(value)


def test_double_returns_double(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Double.new({"int": 21}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(42)


def test_bytes_result(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Blob.new({"size": 100}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(b"x" * 100)


def test_ok_completes_row(instance: Instance, db: psycopg.Connection[Any], prefix: str) -> None:
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert job_state(db, prefix, relay.job.id) == "completed"


def test_keyword_instance_name(instance: Instance) -> None:
    relay = Relay.async_(Echo.new({"value": 7}), instance=instance.name)
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(7)


def test_relay_fields(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    assert relay.job.id is not None
    assert relay.job.meta["relay"]["ref"] == str(relay.ref)
    assert relay.instance == instance.name


def test_default_options_leave_meta_narrow(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    row = db.execute(
        sql.SQL("SELECT meta FROM {} WHERE id = %s").format(sql.Identifier(prefix, "jobs")),
        (relay.job.id,),
    ).fetchone()

    assert row is not None
    assert set(row[0]["relay"]) == {"ref", "node", "mailbox"}
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(1)


def test_exception_gives_job_error(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Fail.new({"message": "no such customer 42"}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert isinstance(result, Error)
    error = result.reason
    assert isinstance(error, JobError)
    assert error.type == "builtins.ValueError"
    assert error.message == "no such customer 42"
    assert error.attempt == 1
    assert error.node == instance.node_id
    assert "ValueError: no such customer 42" in error.traceback


def test_last_failure_discards_row(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Fail.new({"message": "boom"}))
    Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert job_state(db, prefix, relay.job.id) == "discarded"


def test_failure_with_retries_left(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Fail.new({"message": "retry me"}, max_attempts=3))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.attempt == 1
    assert job_state(db, prefix, relay.job.id) == "retryable"


def retry_due_in(conn: psycopg.Connection[Any], schema: str, job_id: int | None) -> float:
    """Return the seconds from now until the job's scheduled time."""
    query = sql.SQL("SELECT extract(epoch FROM scheduled_at - now()) FROM {} WHERE id = %s")
    row = conn.execute(query.format(sql.Identifier(schema, "jobs")), (job_id,)).fetchone()
    assert row is not None
    return float(row[0])


def test_far_backoff_bounded_to_year(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    """A backoff past PostgreSQL's timestamps is cut to a year, so the failure is recorded."""
    relay = Relay.async_(instance.name, FailWithBackoff.new({"backoff": "1e15"}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)

    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "builtins.ValueError"
    assert job_state(db, prefix, relay.job.id) == "retryable"
    assert MAX_DELAY_SECONDS - 60 < retry_due_in(db, prefix, relay.job.id) <= MAX_DELAY_SECONDS


def test_nan_backoff_uses_default(
    instance: Instance,
    db: psycopg.Connection[Any],
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay = Relay.async_(instance.name, FailWithBackoff.new({"backoff": "nan"}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)

    assert isinstance(result, Error)
    assert job_state(db, prefix, relay.job.id) == "retryable"
    # The default after attempt 1: 15 s plus 2 s, plus up to 10 % jitter.
    assert 16.0 < retry_due_in(db, prefix, relay.job.id) <= 17.0 * 1.1
    warnings = [r for r in caplog.records if getattr(r, "action", "") == "backoff_failed"]
    assert len(warnings) == 1
    assert "nan" in warnings[0].getMessage()


def test_snooze_gives_snoozed(instance: Instance, db: psycopg.Connection[Any], prefix: str) -> None:
    relay = Relay.async_(instance.name, Snoozer.new({}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.SNOOZED)
    assert job_state(db, prefix, relay.job.id) == "scheduled"


def test_discard_gives_discarded(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Discarder.new({"reason": "stale"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.DISCARDED)
    assert job_state(db, prefix, relay.job.id) == "discarded"


def test_cancel_gives_cancelled(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Canceller.new({"reason": "user left"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.CANCELLED)
    assert job_state(db, prefix, relay.job.id) == "cancelled"


def test_large_result_too_large(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Blob.new({"size": 20_000, "random": True}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.RESULT_TOO_LARGE)
    assert job_state(db, prefix, relay.job.id) == "completed"


def test_unencodable_names_type(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Unencodable.new({}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert "builtins.object" in result.reason.message
    assert result.reason.node == instance.node_id
    assert job_state(db, prefix, relay.job.id) == "completed"


def test_timeout_returns_at_deadline(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Sleep.new({"seconds": 1.5, "value": "late"}))
    started = time.monotonic()
    result = Relay.await_(relay, timeout=0.3)
    elapsed = time.monotonic() - started
    assert result == Error(Reason.TIMEOUT)
    assert elapsed >= 0.3
    assert elapsed < 0.3 + 0.5


def test_await_after_timeout_gets_result(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Sleep.new({"seconds": 1.0, "value": "late"}))
    assert Relay.await_(relay, timeout=0.2) == Error(Reason.TIMEOUT)
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("late")


def test_await_twice_same_result(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Echo.new({"value": "once"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("once")
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("once")


def test_zero_timeout_returns_timeout(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Sleep.new({"seconds": 1.0}))
    assert Relay.await_(relay, timeout=0) == Error(Reason.TIMEOUT)


def test_unknown_worker_names_worker(instance: Instance) -> None:
    missing = dataclasses.replace(Echo.new({"value": 1}), worker="tests.workers.Missing")
    relay = Relay.async_(instance.name, missing)
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert "tests.workers.Missing" in result.reason.message
    assert instance.node_id in result.reason.message
    assert result.reason.node == instance.node_id


@pytest.mark.parametrize(
    "timeout", [-1, float("nan"), "5", None, True], ids=["negative", "nan", "str", "none", "bool"]
)
def test_invalid_timeout_rejected(instance: Instance, timeout: Any) -> None:
    relay = Relay.async_(instance.name, Echo.new({"value": 1}))
    with pytest.raises(ConfigurationError, match="invalid timeout"):
        Relay.await_(relay, timeout=timeout)


def test_await_rejects_non_relay(instance: Instance) -> None:
    with pytest.raises(TypeError, match="Relay"):
        Relay.await_(Echo.new({"value": 1}))  # type: ignore[arg-type]


def test_snooze_batched_with_others(instance: Instance) -> None:
    # Outcomes that finish together are recorded in one batch. Snooze(60)
    # carries an int delay, while failed and completed attempts carry floats.
    jobs = [Snoozer.new({}) if i % 10 == 5 else Echo.new({"value": i}) for i in range(40)]
    relays = Relay.async_many(instance.name, jobs)
    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)
    expected = [Error(Reason.SNOOZED) if i % 10 == 5 else Ok(i) for i in range(40)]
    assert results == expected


def test_failed_attempt_ends_wait(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Flaky.new({"succeed_on": 2}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "builtins.RuntimeError"
    assert result.reason.attempt == 1


def test_with_retries_waits_for_success(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Flaky.new({"succeed_on": 2}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT, with_retries=True) == Ok("succeeded")


def test_with_retries_returns_last_error(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Flaky.new({"succeed_on": 9}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT, with_retries=True)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.attempt == 3
    assert result.reason.message == "attempt 3 failed"


def test_later_await_sees_final_outcome(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Flaky.new({"succeed_on": 2}))
    Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT, with_retries=True) == Ok("succeeded")
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("succeeded")


RICH_KINDS = [
    "point", "color", "set", "frozenset", "datetime", "date", "timedelta", "decimal", "uuid",
    "tuple", "bytes",
]  # fmt: skip


@pytest.mark.parametrize("kind", RICH_KINDS)
def test_rich_value_round_trips(instance: Instance, kind: str) -> None:
    relay = Relay.async_(instance.name, Rich.new({"kind": kind}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert isinstance(result, Ok)
    assert_same(rich_value(kind), result.value)


def test_unregistered_class_names_type(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Rich.new({"kind": "unregistered"}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert "tests.values.Unregistered" in result.reason.message


def test_undecodable_result_stays_completed(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    relay = Relay.async_(instance.name, Rich.new({"kind": "point"}))
    wait_until(
        lambda: job_state(db, prefix, relay.job.id) == "completed",
        timeout=RESULT_TIMEOUT,
        message="the job did not complete",
    )
    # Unregister the tag, so this process decodes as a caller without the class would.
    codec.unregister(POINT_TAG)
    try:
        result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
    finally:
        codec.register(Point, tag=POINT_TAG)
    assert result == Error(Reason.UNDECODABLE)
    assert job_state(db, prefix, relay.job.id) == "completed"
