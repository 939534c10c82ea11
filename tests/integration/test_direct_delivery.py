"""The listener hands final results straight to the futures that callers wait on,
and queues results for a mailbox without waking it while no caller needs them.

The mailbox lists each waiting future in the directory. The listener resolves
those with a final result on its own thread, and the mailbox learns of the
result later, for its records. These tests drive a real mailbox actor and a
listener's routing code, without a database.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.listener import QUIET_INBOX_LIMIT, ListenerActor
from relay_actors.actors.mailbox import RelayRefActor, track
from relay_actors.actors.messages import READ_ROW, AwaitRefs, Deliver, Forget
from relay_actors.actors.slot import ActorSlot
from relay_actors.wire import Delivery, Entry, pack_payloads
from tests.conftest import wait_until

REPLY_SECONDS = 5.0
REF = "6d0c5a8e-2b1f-4c3d-9e8f-0a1b2c3d4e5f"
JOB_ID = 41


@pytest.fixture
def directory() -> MailboxDirectory:
    return MailboxDirectory()


@pytest.fixture
def mailbox(directory: MailboxDirectory) -> Iterator[pykka.ActorRef[Any]]:
    actor = RelayRefActor.start(directory)
    yield actor
    actor.stop(timeout=REPLY_SECONDS)


@pytest.fixture
def other_mailbox(directory: MailboxDirectory) -> Iterator[pykka.ActorRef[Any]]:
    """A second mailbox on the same directory, as another caller thread has."""
    actor = RelayRefActor.start(directory)
    yield actor
    actor.stop(timeout=REPLY_SECONDS)


@pytest.fixture
def listener(directory: MailboxDirectory) -> ListenerActor:
    """A listener that is never started: the tests call its routing code directly."""
    return ListenerActor(
        dsn="host=unused",
        node_id="node-test",
        insert_channel=None,
        relay_channel="relay",
        control_channel="control",
        directory=directory,
        producers={},
        poller=ActorSlot(),
    )


def await_ref(mailbox: pykka.ActorRef[Any], *, with_retries: bool = False) -> Any:
    """Ask the mailbox for the future of REF, as `Relay.await_` does."""
    futures = mailbox.ask(AwaitRefs(((REF, JOB_ID),), with_retries), timeout=REPLY_SECONDS)
    return futures[0]


def payload_for(mailbox: pykka.ActorRef[Any], delivery: Delivery, ref: str = REF) -> str:
    [payload] = pack_payloads([(Entry(mailbox.actor_urn, ref, delivery), True)])
    return payload


def test_listener_resolves_waiting_future(
    mailbox: pykka.ActorRef[Any], listener: ListenerActor
) -> None:
    track(mailbox, ((REF, JOB_ID),))
    future = await_ref(mailbox)
    assert not future.done()
    delivery = Delivery(JOB_ID, "ok", 1, True, b"\x01")

    listener._route_results(payload_for(mailbox, delivery))

    # Set before _route_results returned: the mailbox's thread played no part.
    assert future.done()
    assert future.get(timeout=0) == delivery
    assert listener.delivered == 1


def test_mailbox_keeps_listener_result(
    mailbox: pykka.ActorRef[Any], listener: ListenerActor, directory: MailboxDirectory
) -> None:
    track(mailbox, ((REF, JOB_ID),))
    first = await_ref(mailbox)
    delivery = Delivery(JOB_ID, "ok", 1, True, b"\x02")
    listener._route_results(payload_for(mailbox, delivery))

    second = await_ref(mailbox)

    assert first.get(timeout=0) == delivery
    assert second.get(timeout=REPLY_SECONDS) == delivery
    statistics = mailbox.proxy().statistics().get(timeout=REPLY_SECONDS)
    assert statistics == {"outcomes": 1, "pending": 0, "waiting": 0}
    assert directory.take_waiting(REF) == []


def test_retry_result_goes_through_mailbox(
    mailbox: pykka.ActorRef[Any], listener: ListenerActor, directory: MailboxDirectory
) -> None:
    track(mailbox, ((REF, JOB_ID),))
    waits_for_final = await_ref(mailbox, with_retries=True)
    takes_any = await_ref(mailbox)
    retryable = Delivery(JOB_ID, "error", 1, False, b"\x03")

    listener._route_results(payload_for(mailbox, retryable))

    assert takes_any.get(timeout=REPLY_SECONDS) == retryable
    assert not waits_for_final.done()
    # Only the future that still waits for the final result stays listed.
    assert directory.take_waiting(REF) == [waits_for_final]


def test_forget_unlists_future(
    mailbox: pykka.ActorRef[Any], listener: ListenerActor, directory: MailboxDirectory
) -> None:
    track(mailbox, ((REF, JOB_ID),))
    future = await_ref(mailbox)
    mailbox.tell(Forget(((REF, future),)))
    statistics = mailbox.proxy().statistics().get(timeout=REPLY_SECONDS)
    assert statistics["waiting"] == 0

    listener._route_results(payload_for(mailbox, Delivery(JOB_ID, "ok", 1, True, b"\x04")))

    assert not future.done()
    assert directory.take_waiting(REF) == []


def test_stopped_mailbox_unlists_futures(
    mailbox: pykka.ActorRef[Any], directory: MailboxDirectory
) -> None:
    track(mailbox, ((REF, JOB_ID),))
    future = await_ref(mailbox)

    mailbox.stop(timeout=REPLY_SECONDS)

    assert future.get(timeout=0) is READ_ROW
    assert directory.take_waiting(REF) == []


def test_unawaited_results_wait_for_limit(
    mailbox: pykka.ActorRef[Any], listener: ListenerActor
) -> None:
    inbox = mailbox.actor_inbox
    assert isinstance(inbox, queue.Queue)
    payloads = [
        payload_for(mailbox, Delivery(JOB_ID + n, "ok", 1, True, b"\x05"), ref=f"ref-{n}")
        for n in range(QUIET_INBOX_LIMIT + 1)
    ]

    for payload in payloads[:QUIET_INBOX_LIMIT]:
        listener._route_results(payload)

    # Queued without a wake-up: the mailbox's thread has handled none of them.
    assert inbox.qsize() == QUIET_INBOX_LIMIT

    listener._route_results(payloads[-1])

    wait_until(
        lambda: inbox.qsize() == 0,
        timeout=REPLY_SECONDS,
        message=lambda: f"{inbox.qsize()} messages still queued",
    )
    statistics = mailbox.proxy().statistics().get(timeout=REPLY_SECONDS)
    assert statistics["outcomes"] == QUIET_INBOX_LIMIT + 1


def test_mailbox_unlists_only_own_futures(
    mailbox: pykka.ActorRef[Any],
    other_mailbox: pykka.ActorRef[Any],
    directory: MailboxDirectory,
) -> None:
    # Two callers await one relay through their own mailboxes.
    track(mailbox, ((REF, JOB_ID),))
    track(other_mailbox, ((REF, JOB_ID),))
    mine = await_ref(mailbox)
    theirs = await_ref(other_mailbox)
    delivery = Delivery(JOB_ID, "ok", 1, True, b"\x06")

    mailbox.tell(Deliver((Entry(mailbox.actor_urn, REF, delivery),)))

    assert mine.get(timeout=REPLY_SECONDS) == delivery
    # The other caller's future stays listed, so the listener can still resolve it.
    assert directory.take_waiting(REF) == [theirs]
