"""Actor inboxes that keep the messages pykka drops at a stop, or wake actors on sockets."""

from __future__ import annotations

import queue
import selectors
import socket
from collections import deque
from typing import Any, TypeVar

import pykka

MessageT = TypeVar("MessageT")


class ClosableInbox(queue.Queue[Any]):
    """A pykka inbox that rejects `tell` messages once `take_queued` has emptied it.

    pykka would drop such a message after `on_stop` or `on_failure`, while its
    sender believes it delivered. Here its `tell` raises ActorDeadError
    instead, so the sender can give the message to another actor. Messages
    sent with `ask` are still queued, because pykka completes their futures
    once the actor's thread ends (with ActorDeadError, unless they ask it to stop).
    """

    def __init__(self) -> None:
        super().__init__()
        self.closed = False

    def _put(self, item: Any) -> None:
        # queue.Queue.put calls this with the mutex held, which take_queued
        # also holds while it closes the inbox.
        if self.closed and getattr(item, "reply_to", None) is None:
            raise pykka.ActorDeadError("the actor stopped and took the messages queued for it")
        super()._put(item)


def take_queued(actor: pykka.Actor, kind: type[MessageT]) -> list[MessageT]:
    """Remove and return the `kind` messages sent with `tell` that wait in `actor`'s inbox.

    pykka 4 drops the `tell` messages still queued when an actor stops or
    fails. Call this from `on_stop` or `on_failure`, when further sends to
    the actor already raise ActorDeadError, to keep those that carry work.
    It reaches into pykka's inbox, a queue.Queue of Envelope objects, so any
    other inbox type returns nothing.

    A sender that found the actor alive just before it stopped may queue
    its message after this call, and pykka drops that one. A `ClosableInbox`
    rejects that message instead, because this call closes it. Executors,
    whose producer has a plain inbox, check after the send that the producer
    is still alive, and hand the outcome to the acker as well if not.
    """
    inbox = actor.actor_inbox
    if not isinstance(inbox, queue.Queue):
        return []
    matching: list[MessageT] = []
    with inbox.mutex:
        if isinstance(inbox, ClosableInbox):
            inbox.closed = True
        others: deque[Any] = deque()
        for envelope in inbox.queue:
            message = getattr(envelope, "message", None)
            if isinstance(message, kind) and getattr(envelope, "reply_to", None) is None:
                matching.append(message)
            else:
                others.append(envelope)
        inbox.queue.clear()
        inbox.queue.extend(others)
    return matching


class WakingInbox(queue.Queue[Any]):
    """A pykka inbox that also makes a socket readable whenever a message is queued.

    An actor that waits on sockets (the listener waits on its PostgreSQL
    connection) also waits on `fileno()`. So a stop request or an `ask` ends
    the wait at once, not at the end of a polling slice.
    """

    def __init__(self) -> None:
        super().__init__()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def _put(self, item: Any) -> None:
        super()._put(item)
        try:
            self._writer.send(b"\0")
        except OSError:
            # The socket buffer is full, so a wake-up is pending already, or
            # the actor stopped and closed the sockets.
            pass

    def fileno(self) -> int:
        """Return the descriptor that is readable while a wake-up is pending."""
        return self._reader.fileno()

    def clear_wakeups(self) -> None:
        """Read the pending wake-ups, before the actor checks for messages and waits again."""
        while True:
            try:
                if not self._reader.recv(4096):
                    return
            except OSError:
                # Nothing left to read (BlockingIOError), or the sockets are closed.
                return

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds, returning early if a message is queued."""
        with selectors.DefaultSelector() as selector:
            selector.register(self._reader, selectors.EVENT_READ)
            selector.select(timeout)

    def close(self) -> None:
        """Close both sockets. Later messages are still queued, without a wake-up."""
        self._reader.close()
        self._writer.close()

    def __del__(self) -> None:
        # An actor that was built but never started never closes its inbox.
        # If socketpair() failed (no descriptors left), there is nothing to close.
        if hasattr(self, "_writer"):
            self.close()
