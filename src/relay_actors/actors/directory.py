"""Routing table from mailbox URNs and adopted refs to live mailbox actors, and waiting futures."""

from __future__ import annotations

import threading
from typing import Any

from pykka import ActorRef

from relay_actors.actors.futures import CallbackFuture


class MailboxDirectory:
    """Thread-safe map that the listener uses to route each result to its mailbox.

    A result names the mailbox of the thread that inserted the relay. When that
    mailbox has stopped and another thread awaits the relay, the new mailbox
    adopts the ref, and results for the ref go there instead.

    Mailboxes also list here the futures that callers wait on, so the listener
    can resolve a waiting future with a final result itself. The caller then
    wakes without a hand-off through the mailbox's thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mailboxes: dict[str, ActorRef[Any]] = {}
        self._adopted: dict[str, ActorRef[Any]] = {}
        self._waiting: dict[str, list[CallbackFuture[Any]]] = {}

    def add(self, urn: str, mailbox: ActorRef[Any]) -> None:
        with self._lock:
            self._mailboxes[urn] = mailbox

    def remove(self, urn: str) -> None:
        with self._lock:
            self._mailboxes.pop(urn, None)
            for ref in [ref for ref, owner in self._adopted.items() if owner.actor_urn == urn]:
                del self._adopted[ref]

    def adopt(self, ref: str, mailbox: ActorRef[Any]) -> None:
        with self._lock:
            self._adopted[ref] = mailbox

    def release(self, ref: str) -> None:
        with self._lock:
            self._adopted.pop(ref, None)

    def route(self, urn: str, ref: str) -> ActorRef[Any] | None:
        """Return the mailbox for a result, preferring a live adopter of the ref."""
        with self._lock:
            adopter = self._adopted.get(ref)
            if adopter is not None:
                return adopter
            return self._mailboxes.get(urn)

    def add_waiting(self, ref: str, future: CallbackFuture[Any]) -> None:
        """List `future` as waiting for the final result of `ref`."""
        with self._lock:
            self._waiting.setdefault(ref, []).append(future)

    def remove_waiting(self, ref: str, future: CallbackFuture[Any]) -> None:
        """Remove `future` from the futures waiting for `ref`, if listed."""
        with self._lock:
            futures = self._waiting.get(ref)
            if futures is None:
                return
            futures[:] = [waiting for waiting in futures if waiting is not future]
            if not futures:
                del self._waiting[ref]

    def has_waiting(self, ref: str) -> bool:
        """Tell whether a future waits for a result of `ref`."""
        with self._lock:
            return ref in self._waiting

    def take_waiting(self, ref: str) -> list[CallbackFuture[Any]]:
        """Remove and return the futures waiting for the final result of `ref`."""
        with self._lock:
            return self._waiting.pop(ref, [])

    def mailboxes(self) -> list[ActorRef[Any]]:
        with self._lock:
            return list(self._mailboxes.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._mailboxes)
