"""Routing table from mailbox URNs and adopted refs to live mailbox actors."""

from __future__ import annotations

import threading
from typing import Any

from pykka import ActorRef


class MailboxDirectory:
    """Thread-safe map that the listener uses to route each result to its mailbox.

    A result names the mailbox of the thread that inserted the relay. When that
    mailbox has stopped and another thread awaits the relay, the new mailbox
    adopts the ref, and results for the ref go there instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._mailboxes: dict[str, ActorRef[Any]] = {}
        self._adopted: dict[str, ActorRef[Any]] = {}

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

    def mailboxes(self) -> list[ActorRef[Any]]:
        with self._lock:
            return list(self._mailboxes.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._mailboxes)
