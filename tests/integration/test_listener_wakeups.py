"""The listener waits long for notifications, yet handles its messages as they arrive.

Its inbox makes a socket readable on every message, and the listener waits on
that socket beside its connection's. So a stop request or an `ask` ends the
wait at once, however long the wait for notifications may last.
"""

from __future__ import annotations

import os
import resource
import select
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pykka
import pytest
from psycopg import sql

from relay_actors.actors import listener as listener_module
from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.inbox import WakingInbox
from relay_actors.actors.listener import ListenerActor
from relay_actors.actors.mailbox import RelayRefActor, track
from relay_actors.actors.messages import AwaitRefs
from relay_actors.actors.slot import ActorSlot
from relay_actors.wire import Delivery, Entry, pack_payloads
from tests.conftest import wait_until

# Longer than any test here may take, so only a wake-up can end a wait in time.
LONG_WAIT_SECONDS = 30.0
# Allowed time for a message to be handled. Without wake-ups it would wait
# for the rest of a LONG_WAIT_SECONDS wait.
PROMPT_SECONDS = 2.0
REF = "0f6f0d8e-4c1b-4d2a-8c3e-5b6a7d8e9f01"
JOB_ID = 7


@pytest.fixture
def directory() -> MailboxDirectory:
    return MailboxDirectory()


def start_listener(
    database_dsn: str, prefix: str, directory: MailboxDirectory, node_id: str
) -> pykka.ActorRef[Any]:
    """Start a listener on the relay and control channels of `prefix`, without producers."""
    return ListenerActor.start(
        dsn=database_dsn,
        node_id=node_id,
        insert_channel=None,
        relay_channel=f"{prefix}_relay",
        control_channel=f"{prefix}_control",
        directory=directory,
        producers={},
        poller=ActorSlot(),
    )


@pytest.fixture
def listener(
    database_dsn: str,
    prefix: str,
    directory: MailboxDirectory,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[pykka.ActorRef[Any]]:
    monkeypatch.setattr(listener_module, "POLL_SECONDS", LONG_WAIT_SECONDS)
    actor = start_listener(database_dsn, prefix, directory, "node-wakeups")
    yield actor
    actor.stop(timeout=PROMPT_SECONDS)


def statistics(listener: pykka.ActorRef[Any]) -> dict[str, Any]:
    result: dict[str, Any] = listener.proxy().statistics().get(timeout=PROMPT_SECONDS)
    return result


def test_listener_answers_asks_during_wait(listener: pykka.ActorRef[Any]) -> None:
    """Each ask comes while the listener waits for notifications, and gets its reply at once."""
    assert statistics(listener)["connected"]
    for _ in range(5):
        started = time.monotonic()
        statistics(listener)
        assert time.monotonic() - started < PROMPT_SECONDS


def test_listener_stops_during_wait(listener: pykka.ActorRef[Any]) -> None:
    assert statistics(listener)["connected"]
    started = time.monotonic()
    listener.stop(timeout=PROMPT_SECONDS)
    assert time.monotonic() - started < PROMPT_SECONDS
    assert not listener.is_alive()


def test_listener_routes_after_asks(
    listener: pykka.ActorRef[Any], database_dsn: str, prefix: str, directory: MailboxDirectory
) -> None:
    """A result sent after the wait was ended by messages still reaches its mailbox."""
    mailbox = RelayRefActor.start(directory)
    try:
        track(mailbox, ((REF, JOB_ID),))
        (future,) = mailbox.ask(AwaitRefs(((REF, JOB_ID),), False), timeout=PROMPT_SECONDS)
        for _ in range(3):
            statistics(listener)
        delivery = Delivery(JOB_ID, "ok", 1, True, b"\x01")
        (payload,) = pack_payloads([(Entry(mailbox.actor_urn, REF, delivery), True)])
        with psycopg.connect(database_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("NOTIFY {}, {}").format(
                    sql.Identifier(f"{prefix}_relay"), sql.Literal(payload)
                )
            )
        assert future.get(timeout=PROMPT_SECONDS) == delivery
        wait_until(
            lambda: statistics(listener)["delivered"] == 1,
            timeout=PROMPT_SECONDS,
            message=lambda: f"listener statistics: {statistics(listener)}",
        )
    finally:
        mailbox.stop(timeout=PROMPT_SECONDS)


@pytest.fixture
def high_descriptors() -> Iterator[None]:
    """Hold open descriptors up to number 1100, so that new ones are numbered above 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    required = 2048
    if hard != resource.RLIM_INFINITY and hard < required:
        pytest.skip(f"the hard limit of open files is {hard}; this test needs {required}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, required), hard))
    open_descriptors: list[int] = []
    try:
        while not open_descriptors or open_descriptors[-1] < 1100:
            open_descriptors.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for descriptor in open_descriptors:
            os.close(descriptor)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_listener_waits_on_high_descriptors(
    high_descriptors: None, database_dsn: str, prefix: str, directory: MailboxDirectory
) -> None:
    """A process with many open files gives the listener descriptors that select.select rejects."""
    actor = start_listener(database_dsn, prefix, directory, "node-high-descriptors")
    try:
        assert statistics(actor)["connected"]
        # A second ask arrives while the listener waits on its descriptors.
        assert statistics(actor)["connected"]
        assert actor.is_alive()
    finally:
        actor.stop(timeout=PROMPT_SECONDS)


def readable(inbox: WakingInbox) -> bool:
    ready, _, _ = select.select([inbox.fileno()], [], [], 0)
    return bool(ready)


def test_waking_inbox_signals_each_put() -> None:
    inbox = WakingInbox()
    try:
        assert not readable(inbox)
        inbox.put("first")
        inbox.put("second")
        assert readable(inbox)
        inbox.clear_wakeups()
        assert not readable(inbox)
        assert inbox.get_nowait() == "first"
        assert inbox.get_nowait() == "second"
    finally:
        inbox.close()


def test_waking_inbox_wait_ends_on_put() -> None:
    inbox = WakingInbox()
    try:
        inbox.put("message")
        started = time.monotonic()
        inbox.wait(LONG_WAIT_SECONDS)
        assert time.monotonic() - started < PROMPT_SECONDS
    finally:
        inbox.close()


def test_waking_inbox_queues_after_close() -> None:
    """A message sent after the actor closed its inbox is still queued, without an error."""
    inbox = WakingInbox()
    inbox.close()
    inbox.put("late")
    assert inbox.get_nowait() == "late"
