"""Inline testing mode against the behaviour of a real instance, with no database.

A real instance reads a result from the job's row when the caller's mailbox
no longer contains it. An inline instance has no row, so these tests check
that its results stay awaitable in the same cases.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import relay_actors
from relay_actors import Instance, Ok, Relay
from tests.workers import Double

# Inline results exist before the await starts, so this only bounds a wrong wait.
AWAIT_TIMEOUT = 1.0
# Seconds for the mailbox of an ended thread to stop.
MAILBOX_STOP_TIMEOUT = 5.0


@pytest.fixture
def start_inline(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Instance]]:
    """Factory of inline instances with unique names, each stopped after the test."""
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
