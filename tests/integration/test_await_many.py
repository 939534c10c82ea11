"""`Relay.await_many`: input order, one shared deadline, partial results, bursts."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from relay_actors import Error, Instance, JobError, Ok, Reason, Relay
from tests.workers import Canceller, Discarder, Double, Echo, Fail, Sleep, Snoozer

RESULT_TIMEOUT = 10.0
# How late await_many may return after its deadline on a loaded 2-core machine.
DEADLINE_SLACK_SECONDS = 0.5


@pytest.fixture
def instance(start_instance: Callable[..., Instance]) -> Instance:
    return start_instance()


def test_results_in_input_order(instance: Instance) -> None:
    jobs = [
        Echo.new({"value": "first"}),
        Fail.new({"message": "second failed"}),
        Snoozer.new({}),
        Double.new({"int": 2}),
        Canceller.new({}),
        Discarder.new({}),
        Echo.new({"value": None}),
    ]
    relays = [Relay.async_(instance.name, job) for job in jobs]
    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)

    assert results[0] == Ok("first")
    assert isinstance(results[1], Error)
    assert isinstance(results[1].reason, JobError)
    assert results[1].reason.message == "second failed"
    assert results[2] == Error(Reason.SNOOZED)
    assert results[3] == Ok(4)
    assert results[4] == Error(Reason.CANCELLED)
    assert results[5] == Error(Reason.DISCARDED)
    assert results[6] == Ok(None)


def test_order_when_finishing_reversed(instance: Instance) -> None:
    delays = [0.6, 0.4, 0.2, 0.0]
    relays = [
        Relay.async_(instance.name, Sleep.new({"seconds": delay, "value": index}))
        for index, delay in enumerate(delays)
    ]
    results = Relay.await_many(relays, timeout=RESULT_TIMEOUT)
    assert results == [Ok(0), Ok(1), Ok(2), Ok(3)]


def test_partial_results_at_deadline(instance: Instance) -> None:
    deadline = 0.8
    relays = [
        Relay.async_(instance.name, Echo.new({"value": "quick"})),
        Relay.async_(instance.name, Sleep.new({"seconds": 2.5, "value": "slow"})),
        Relay.async_(instance.name, Sleep.new({"seconds": 0.1, "value": "short"})),
        Relay.async_(instance.name, Sleep.new({"seconds": 2.5, "value": "slow"})),
    ]
    started = time.monotonic()
    results = Relay.await_many(relays, timeout=deadline)
    elapsed = time.monotonic() - started

    assert elapsed >= deadline
    assert elapsed <= deadline + DEADLINE_SLACK_SECONDS
    assert results == [
        Ok("quick"),
        Error(Reason.TIMEOUT),
        Ok("short"),
        Error(Reason.TIMEOUT),
    ]


def test_all_done_returns_early(instance: Instance) -> None:
    relays = [Relay.async_(instance.name, Echo.new({"value": i})) for i in range(5)]
    started = time.monotonic()
    Relay.await_many(relays, timeout=RESULT_TIMEOUT)
    assert time.monotonic() - started < RESULT_TIMEOUT / 2


def test_empty_list_returns_empty(instance: Instance) -> None:
    assert Relay.await_many([], timeout=RESULT_TIMEOUT) == []


def test_same_relay_twice(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Echo.new({"value": "twice"}))
    assert Relay.await_many([relay, relay], timeout=RESULT_TIMEOUT) == [Ok("twice"), Ok("twice")]


def test_rejects_non_relay(instance: Instance) -> None:
    with pytest.raises(TypeError, match="Relay"):
        Relay.await_many([Echo.new({"value": 1})])  # type: ignore[list-item]


def test_burst_of_results_delivered(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance(queues={"quick": 20})
    count = 2_000
    relays = Relay.async_many(instance.name, [Echo.new({"value": i}) for i in range(count)])
    results = Relay.await_many(relays, timeout=45.0)
    missing = [index for index, result in enumerate(results) if result != Ok(index)]
    assert missing == [], f"{len(missing)} of {count} results missing or wrong, first {missing[:5]}"
