"""RelayRefActor: a caller thread's mailbox for relay results."""

from __future__ import annotations

import logging
import queue
import time
from collections import OrderedDict
from typing import Any

import pykka
from pykka import ThreadingFuture
from pykka._envelope import Envelope

from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.futures import CallbackFuture
from relay_actors.actors.messages import (
    READ_ROW,
    AwaitRefs,
    Deliver,
    Forget,
    PendingRefs,
    Track,
)
from relay_actors.wire import Delivery

logger = logging.getLogger("relay_actors.mailbox")

DEFAULT_MAX_OUTCOMES = 10_000


def track(mailbox: pykka.ActorRef[Any], items: tuple[tuple[str, int], ...]) -> None:
    """Queue a `Track` of (ref, job id) pairs for `mailbox` without waking its thread.

    Every reply or result the mailbox gives comes from a later message, which
    wakes its thread, and the inbox is first in, first out, so the mailbox
    always has the refs when it needs them. Inserting callers thus skip one
    thread wake-up per insert.

    Raises:
        pykka.ActorDeadError: the mailbox has stopped.
    """
    post_quietly(mailbox, Track(items))


def post_quietly(
    mailbox: pykka.ActorRef[Any], message: Track | Deliver, limit: int | None = None
) -> None:
    """Queue `message` for `mailbox` without waking its thread.

    The mailbox handles it before the next message that wakes it: an await,
    a result that a caller waits for, or the poller's periodic `PendingRefs`.
    With `limit`, an inbox holding that many messages or more is woken as by
    a plain tell, so unhandled messages stay bounded. This reaches into
    pykka's inbox (a queue.Queue of Envelope objects in pykka 4), so any
    other inbox type falls back to a plain tell.

    Raises:
        pykka.ActorDeadError: the mailbox has stopped.
    """
    inbox = mailbox.actor_inbox
    if not mailbox.is_alive():
        raise pykka.ActorDeadError(f"{mailbox} not found")
    if not isinstance(inbox, queue.Queue):
        mailbox.tell(message)
        return
    with inbox.mutex:
        if limit is None or len(inbox.queue) < limit:
            inbox.queue.append(Envelope(message))
            inbox.unfinished_tasks += 1
            return
    mailbox.tell(message)


class RelayRefActor(pykka.ThreadingActor):
    """Keeps the results of one caller thread's relays and replies to its awaits.

    Results that arrive before anyone awaits them are kept, up to
    `max_outcomes`, and the oldest are dropped first. An await of a dropped
    result reads the job's row instead. It runs on its own daemon thread and
    handles every message without I/O.
    """

    use_daemon_thread = True

    @staticmethod
    def _create_future() -> CallbackFuture[Any]:
        # ActorRef.ask() makes its reply future with this hook (pykka 4.5), so
        # an asyncio caller can wait for the reply to AwaitRefs without a thread.
        # If pykka stopped calling it, relay_actors.aio would raise TypeError.
        return CallbackFuture()

    def __init__(
        self, directory: MailboxDirectory, max_outcomes: int = DEFAULT_MAX_OUTCOMES
    ) -> None:
        super().__init__()
        self._directory = directory
        self._max_outcomes = max_outcomes
        self._outcomes: OrderedDict[str, Delivery] = OrderedDict()
        # Refs without a final outcome yet: ref -> (job id, monotonic time tracked).
        self._pending: dict[str, tuple[int, float]] = {}
        # Futures that callers wait on, also listed in the directory, where the
        # listener resolves them with final results.
        self._waiters: dict[str, list[tuple[CallbackFuture[Any], bool]]] = {}

    def on_start(self) -> None:
        self._directory.add(self.actor_urn, self.actor_ref)

    def on_stop(self) -> None:
        self._directory.remove(self.actor_urn)
        # Callers still waiting here read the row and move to a live mailbox.
        for ref, waits in self._waiters.items():
            for future, _ in waits:
                self._directory.remove_waiting(ref, future)
                future.offer(READ_ROW)
        self._waiters.clear()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Deliver):
            for entry in message.entries:
                self._deliver(entry.ref, entry.delivery)
            return None
        if isinstance(message, AwaitRefs):
            return [self._await(ref, job_id, message.with_retries) for ref, job_id in message.items]
        if isinstance(message, Track):
            now = time.monotonic()
            for ref, job_id in message.items:
                known = self._outcomes.get(ref)
                if known is None or not known.final:
                    self._pending[ref] = (job_id, now)
            return None
        if isinstance(message, PendingRefs):
            return self._pending_refs(message.ttl)
        if isinstance(message, Forget):
            for ref, future in message.waits:
                self._forget(ref, future)
            return None
        logger.warning(
            "mailbox %s dropped an unknown message %r",
            self.actor_urn,
            type(message),
            extra={"action": "unknown_message"},
        )
        return None

    def statistics(self) -> dict[str, int]:
        return {
            "outcomes": len(self._outcomes),
            "pending": len(self._pending),
            "waiting": sum(len(waits) for waits in self._waiters.values()),
        }

    def _deliver(self, ref: str, delivery: Delivery) -> None:
        # NOTE: a result for a ref this mailbox never tracked is kept too (up to
        # max_outcomes), so without a signing secret forged results cost memory.
        known = self._outcomes.get(ref)
        if known is not None and not delivery.supersedes(known):
            return
        self._outcomes[ref] = delivery
        self._outcomes.move_to_end(ref)
        if delivery.final:
            self._pending.pop(ref, None)
            self._directory.release(ref)
        while len(self._outcomes) > self._max_outcomes:
            self._outcomes.popitem(last=False)
        waits = self._waiters.get(ref)
        if not waits:
            return
        remaining: list[tuple[CallbackFuture[Any], bool]] = []
        for future, with_retries in waits:
            if with_retries and not delivery.final:
                remaining.append((future, with_retries))
                continue
            # The listener may have resolved it with this result already. Only
            # this mailbox's futures are unlisted: another mailbox that adopted
            # the ref may list its own.
            future.offer(delivery)
            self._directory.remove_waiting(ref, future)
        if remaining:
            self._waiters[ref] = remaining
        else:
            del self._waiters[ref]

    def _await(self, ref: str, job_id: int, with_retries: bool) -> ThreadingFuture[Any]:
        future: CallbackFuture[Any] = CallbackFuture()
        known = self._outcomes.get(ref)
        if known is not None and known.final:
            future.set(known)
            return future
        if ref not in self._pending:
            # No record of this ref, or only a per-attempt outcome of a ref that
            # expired: its result was dropped from the cache, it was inserted by
            # another mailbox, or a newer outcome went unnoticed. Expect it from
            # now on, and let the caller read the row for anything before.
            self._pending[ref] = (job_id, time.monotonic())
            self._directory.adopt(ref, self.actor_ref)
            future.set(READ_ROW)
            return future
        if known is not None and not with_retries:
            future.set(known)
            return future
        self._waiters.setdefault(ref, []).append((future, with_retries))
        self._directory.add_waiting(ref, future)
        return future

    def _pending_refs(self, ttl: float) -> list[tuple[str, int]]:
        expired_before = time.monotonic() - ttl
        expired = [
            ref
            for ref, (_, tracked_at) in self._pending.items()
            if tracked_at < expired_before and ref not in self._waiters
        ]
        for ref in expired:
            del self._pending[ref]
            self._directory.release(ref)
        if expired:
            logger.debug(
                "mailbox %s dropped %d expired pending refs",
                self.actor_urn,
                len(expired),
                extra={"action": "refs_expired"},
            )
        return [(ref, job_id) for ref, (job_id, _) in self._pending.items()]

    def _forget(self, ref: str, future: ThreadingFuture[Any]) -> None:
        if isinstance(future, CallbackFuture):
            self._directory.remove_waiting(ref, future)
        waits = self._waiters.get(ref)
        if not waits:
            return
        waits[:] = [(waiting, flag) for waiting, flag in waits if waiting is not future]
        if not waits:
            del self._waiters[ref]
