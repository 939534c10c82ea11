"""Messages queued for an actor that pykka would drop when it stops."""

from __future__ import annotations

import queue
from collections import deque
from typing import Any, TypeVar

import pykka

MessageT = TypeVar("MessageT")


def take_queued(actor: pykka.Actor, kind: type[MessageT]) -> list[MessageT]:
    """Remove and return the `kind` messages sent with `tell` that wait in `actor`'s inbox.

    pykka 4 drops the `tell` messages still queued when an actor stops or
    fails. Call this from `on_stop` or `on_failure`, when further sends to
    the actor already raise ActorDeadError, to keep those that carry work.
    It reaches into pykka's inbox, a queue.Queue of Envelope objects, so any
    other inbox type returns nothing.

    A sender that found the actor alive just before it stopped may queue
    its message after this call, and pykka drops that one. So senders of
    outcomes check after the send that the actor is still alive: executors
    then hand the outcome to the acker as well, and `send_outcome` to the
    acker's replacement, or else gives it up for the producer's audit.
    """
    inbox = actor.actor_inbox
    if not isinstance(inbox, queue.Queue):
        return []
    matching: list[MessageT] = []
    with inbox.mutex:
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
