"""Inline testing mode: `start(testing="inline")` runs jobs on the caller's thread, no database."""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import relay_actors
from relay_actors import (
    ConfigurationError,
    Error,
    Instance,
    InstanceNotFoundError,
    InvalidJobError,
    Job,
    JobError,
    Ok,
    Reason,
    Relay,
    Worker,
)
from relay_actors.testing import drain_queue
from tests.values import Point
from tests.workers import (
    Blob,
    Canceller,
    Discarder,
    Double,
    Echo,
    Fail,
    Flaky,
    Rich,
    Snoozer,
    Unencodable,
    blob,
)

# Inline results are in the mailbox before the await starts, so a zero
# timeout must still return them.
NO_WAIT = 0.0
# Inline results exist before an await starts, so this only bounds a wrong wait.
AWAIT_TIMEOUT = 1.0
# Seconds for a mailbox to stop.
MAILBOX_STOP_TIMEOUT = 5.0

performed_on: list[int] = []


class RecordThread(Worker[int]):
    """Record the id of the thread that runs the job, and return `args["value"]`."""

    def perform(self, job: Job[Any]) -> int:
        performed_on.append(threading.get_ident())
        return int(job.args["value"])


@pytest.fixture
def start_inline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Instance]]:
    """Factory of inline instances with unique names, each stopped after the test.

    No DSN is set, so a test that reaches for a database fails.
    """
    for variable in ("RELAY_ACTORS_DSN", "DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    started: list[Instance] = []

    def start(**options: Any) -> Instance:
        options.setdefault("name", f"inline-{secrets.token_hex(4)}")
        options.setdefault("plugins", [Relay])
        instance = relay_actors.start(testing="inline", **options)
        started.append(instance)
        return instance

    yield start
    for instance in started:
        instance.stop()


def test_return_value_is_ok(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Double.new({"int": 21}))
    assert Relay.await_(relay, timeout=NO_WAIT) == Ok(42)


@pytest.mark.parametrize(
    "value",
    [None, 0, "text", [1, 2], {"nested": {"list": [1.5]}}],
)
def test_plain_values_round_trip(start_inline: Callable[..., Instance], value: Any) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Echo.new({"value": value}))
    assert Relay.await_(relay, timeout=NO_WAIT) == Ok(value)


def test_registered_class_round_trips(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Rich.new({"kind": "point"}))
    result = Relay.await_(relay, timeout=NO_WAIT)
    assert isinstance(result, Ok)
    assert isinstance(result.value, Point)


def test_exception_is_job_error(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Fail.new({"message": "bad input"}))
    result = Relay.await_(relay, timeout=NO_WAIT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "builtins.ValueError"
    assert result.reason.message == "bad input"
    assert result.reason.attempt == 1
    assert result.reason.node == instance.node_id
    assert "ValueError: bad input" in result.reason.traceback
    assert relay.job.state == "discarded"


def test_failure_with_retries_left_is_final(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Flaky.new({"succeed_on": 2}))
    plain = Relay.await_(relay, timeout=NO_WAIT)
    through_retries = Relay.await_(relay, timeout=NO_WAIT, with_retries=True)
    assert isinstance(plain, Error)
    assert isinstance(plain.reason, JobError)
    assert plain.reason.message == "attempt 1 failed"
    assert through_retries == plain
    assert relay.job.state == "retryable"


@pytest.mark.parametrize(
    ("job", "reason", "state"),
    [
        (Snoozer.new({}), Reason.SNOOZED, "scheduled"),
        (Canceller.new({"reason": "not needed"}), Reason.CANCELLED, "cancelled"),
        (Discarder.new({"reason": "bad data"}), Reason.DISCARDED, "discarded"),
    ],
    ids=["snooze", "cancel", "discard"],
)
def test_markers_give_their_reasons(
    start_inline: Callable[..., Instance], job: Job[Any], reason: Reason, state: str
) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, job)
    assert Relay.await_(relay, timeout=NO_WAIT) == Error(reason)
    assert relay.job.state == state


def test_unencodable_value_is_job_error(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Unencodable.new({}))
    result = Relay.await_(relay, timeout=NO_WAIT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "relay_actors.codec.EncodeError"
    assert relay.job.state == "completed"


def test_unregistered_class_is_job_error(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Rich.new({"kind": "unregistered"}))
    result = Relay.await_(relay, timeout=NO_WAIT)
    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "relay_actors.codec.EncodeError"
    assert "Unregistered" in result.reason.message


def test_default_size_limit_applies(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    too_large = Relay.async_(instance.name, Blob.new({"size": 9000, "random": True}))
    fits = Relay.async_(instance.name, Blob.new({"size": 4000, "seed": 7}))
    assert Relay.await_(too_large, timeout=NO_WAIT) == Error(Reason.RESULT_TOO_LARGE)
    assert Relay.await_(fits, timeout=NO_WAIT) == Ok(blob(4000, seed=7))
    assert too_large.job.state == "completed"


def test_plugin_size_limit_applies(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline(plugins=[Relay.plugin(max_result_bytes=100)])
    relay = Relay.async_(instance.name, Blob.new({"size": 500, "seed": 1}))
    assert Relay.await_(relay, timeout=NO_WAIT) == Error(Reason.RESULT_TOO_LARGE)


def test_invalid_job_raises_before_running(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    performed_on.clear()
    invalid = dataclasses.replace(RecordThread.new({"value": 1}), priority=12)
    with pytest.raises(InvalidJobError) as raised:
        Relay.async_(instance.name, invalid)
    assert any("priority" in problem for problem in raised.value.problems)
    with pytest.raises(InvalidJobError):
        Relay.async_many(instance.name, [RecordThread.new({"value": 2}), invalid])
    assert performed_on == []


def test_job_runs_on_caller_thread(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    performed_on.clear()
    relay = Relay.async_(instance.name, RecordThread.new({"value": 5}))
    assert performed_on == [threading.get_ident()]
    assert Relay.await_(relay, timeout=NO_WAIT) == Ok(5)


def test_await_many_keeps_order(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relays = Relay.async_many(
        instance.name,
        [Double.new({"int": 1}), Fail.new({"message": "second"}), Double.new({"int": 3})],
    )
    assert [relay.job.id for relay in relays] == [1, 2, 3]
    results = Relay.await_many(list(reversed(relays)), timeout=NO_WAIT)
    assert results[0] == Ok(6)
    assert isinstance(results[1], Error)
    assert isinstance(results[1].reason, JobError)
    assert results[1].reason.message == "second"
    assert results[2] == Ok(2)


def test_scheduled_job_runs_at_once(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Double.new({"int": 4}, scheduled_in=3600))
    assert Relay.await_(relay, timeout=NO_WAIT) == Ok(8)


def test_default_instance_name(start_inline: Callable[..., Instance]) -> None:
    start_inline(name="default")
    relay = Relay.async_(Double.new({"int": 5}))
    assert Relay.await_(relay, timeout=NO_WAIT) == Ok(10)


def test_cancel_and_drain_rejected(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relay = Relay.async_(instance.name, Double.new({"int": 1}))
    assert relay.job.id is not None
    assert instance.cancel_job(relay.job.id) is False
    with pytest.raises(ConfigurationError, match="inline testing mode"):
        drain_queue("quick", instance=instance.name)


def test_stopped_instance_rejects_inserts(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    instance.stop()
    with pytest.raises(InstanceNotFoundError):
        Relay.async_(instance.name, Double.new({"int": 1}))


def test_invalid_testing_mode_rejected() -> None:
    with pytest.raises(ConfigurationError, match="invalid testing mode 'manual'"):
        relay_actors.start(testing="manual", plugins=[Relay])


# A real instance reads a result from the job's row when the caller's mailbox
# no longer contains it. An inline instance has no row, so its results must
# stay awaitable in the same cases.


def test_inline_await_after_thread_ended(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline()
    relays: list[Relay[int]] = []
    inserter = threading.Thread(
        target=lambda: relays.append(Relay.async_(instance.name, Double.new({"int": 2})))
    )
    inserter.start()
    inserter.join()
    # The inserting thread's mailbox stops once the thread is gone, and a real
    # instance then reads the result from the job's row. The test stops the
    # mailbox itself, because when the thread's locals are freed depends on
    # the interpreter.
    mailbox = relays[0].mailbox
    mailbox.stop(timeout=MAILBOX_STOP_TIMEOUT)
    assert not mailbox.is_alive(), "the ended thread's mailbox is still running"

    assert Relay.await_(relays[0], timeout=AWAIT_TIMEOUT) == Ok(4)


def test_inline_await_many_past_max_outcomes(start_inline: Callable[..., Instance]) -> None:
    instance = start_inline(max_outcomes=2)
    relays = Relay.async_many(instance.name, [Double.new({"int": i}) for i in range(4)])

    results = Relay.await_many(relays, timeout=AWAIT_TIMEOUT)

    assert results == [Ok(0), Ok(2), Ok(4), Ok(6)]
