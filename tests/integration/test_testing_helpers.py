"""relay_actors.testing: running a queue's jobs in the test's own thread."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay_actors import Error, Instance, InstanceNotFoundError, JobError, Ok, Reason, Relay
from relay_actors.testing import drain_queue
from tests.workers import QUICK_QUEUE, Double, Echo, Fail, Snoozer


def test_drain_runs_jobs_and_counts(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance(queues={})
    doubled = Relay.async_(instance.name, Double.new({"int": 21}))
    echoed = Relay.async_(instance.name, Echo.new({"value": None}))
    failed = Relay.async_(instance.name, Fail.new({"message": "boom"}, max_attempts=1))
    snoozed = Relay.async_(instance.name, Snoozer.new({}))
    counts = drain_queue(QUICK_QUEUE, instance=instance.name)
    assert counts == {"completed": 2, "discarded": 1, "scheduled": 1}
    assert Relay.await_(doubled, timeout=5) == Ok(42)
    assert Relay.await_(echoed, timeout=5) == Ok(None)
    failure = Relay.await_(failed, timeout=5)
    assert isinstance(failure, Error)
    assert isinstance(failure.reason, JobError)
    assert failure.reason.message == "boom"
    assert Relay.await_(snoozed, timeout=5) == Error(Reason.SNOOZED)


def test_drain_of_empty_queue_counts_nothing(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance(queues={})
    assert drain_queue(QUICK_QUEUE, instance=instance.name) == {}


def test_drain_unknown_instance_raises() -> None:
    with pytest.raises(InstanceNotFoundError):
        drain_queue(QUICK_QUEUE, instance="no-such-instance")
