"""`ActorSlot`: a reference to whichever actor currently fills a role."""

from __future__ import annotations

import threading
from typing import Any

import pykka


class ActorSlot:
    """Holds the current actor of a role, so senders keep working after a restart."""

    def __init__(self, ref: pykka.ActorRef[Any] | None = None) -> None:
        self._lock = threading.Lock()
        self._ref = ref

    @property
    def ref(self) -> pykka.ActorRef[Any] | None:
        with self._lock:
            return self._ref

    @ref.setter
    def ref(self, ref: pykka.ActorRef[Any] | None) -> None:
        with self._lock:
            self._ref = ref

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
