"""A producer with nothing else queued claims at once, without a Claim message to itself."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from relay_actors import Instance, Ok, Relay
from tests.workers import QUICK_QUEUE, Echo

ROUND_TRIPS = 20
RESULT_TIMEOUT = 8.0


def test_idle_producer_claims_without_message(
    start_instance: Callable[..., Instance], producer_messages: list[Any]
) -> None:
    """Each lone job's wake-up and outcome lead to statements on the producer's own turn.

    A Claim message is only sent when other messages wait, so sequential
    round trips on an idle queue need few of them. Sending one for every
    wake-up and every outcome took two per round trip.
    """
    instance = start_instance(queues={QUICK_QUEUE: 2})

    for n in range(ROUND_TRIPS):
        relay = Relay.async_(instance.name, Echo.new({"value": n}))
        assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(n)

    received = Counter(type(message).__name__ for message in producer_messages)
    assert received["Wake"] >= ROUND_TRIPS
    # A tick or a wake-up may still queue a few Claim messages.
    assert received["Claim"] < ROUND_TRIPS // 2
