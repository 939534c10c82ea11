"""`ActorSlot`: a reference to whichever actor currently fills a role."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection
from typing import Any

import pykka


class ActorSlot:
    """Holds the current actor of a role, so senders keep working after a restart."""

    def __init__(self, ref: pykka.ActorRef[Any] | None = None) -> None:
        self._changed = threading.Condition(threading.Lock())
        self._ref = ref
        self._closed = False

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        with self._changed:
            return self._ref

    @ref.setter
    def ref(self, ref: pykka.ActorRef[Any] | None) -> None:
        with self._changed:
            self._ref = ref
            self._changed.notify_all()

    def close(self) -> None:
        """Mark the role as ended: no actor fills the slot again, and waits return at once."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for_other(
        self, refs: Collection[pykka.ActorRef[Any]], timeout: float
    ) -> pykka.ActorRef[Any] | None:
        """Return a live actor of the role other than `refs`, waiting up to `timeout` seconds.

        Returns None if none fills the slot by then, or once the slot is closed.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                ref = self._ref
                if ref is not None and ref not in refs and ref.is_alive():
                    return ref
                remaining = deadline - time.monotonic()
                if self._closed or remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def tell(self, message: Any) -> bool:
        """Send `message`; return False if no live actor fills the slot."""
        ref = self.ref
        if ref is None:
            return False
        try:
            ref.tell(message)
        except pykka.ActorDeadError:
            return False
        return True
