"""`Supervisor`: starts an instance's actors and restarts any that stop unexpectedly."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pykka

from relay_actors.actors.slot import ActorSlot

logger = logging.getLogger("relay_actors.supervision")

ActorFactory = Callable[[], pykka.ActorRef[Any]]


@dataclass
class _Child:
    name: str
    factory: ActorFactory
    slot: ActorSlot
    on_start: Callable[[pykka.ActorRef[Any]], None] | None = None
    restarts: int = 0


class Supervisor:
    """Keeps one live actor per role.

    `check()` restarts the actor of any role whose actor stopped without
    `stop()`, for example after an exception in a message sent with `tell`,
    and logs why. It runs on the instance's ticker thread.
    """

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._children: dict[str, _Child] = {}

    def start_child(
        self,
        name: str,
        factory: ActorFactory,
        slot: ActorSlot | None = None,
        on_start: Callable[[pykka.ActorRef[Any]], None] | None = None,
    ) -> ActorSlot:
        """Start an actor for role `name`; return the slot that always contains its current ref."""
        child = _Child(name, factory, slot or ActorSlot(), on_start)
        self._children[name] = child
        self._start(child)
        return child.slot

    def _start(self, child: _Child) -> None:
        ref = child.factory()
        child.slot.ref = ref
        if child.on_start is not None:
            child.on_start(ref)

    def check(self) -> None:
        for child in self._children.values():
            ref = child.slot.ref
            if ref is not None and ref.is_alive():
                continue
            child.restarts += 1
            logger.error(
                "actor %s of node %s stopped unexpectedly (see the error logged before); "
                "restart %d",
                child.name,
                self._node_id,
                child.restarts,
                extra={"action": "actor_restart", "node": self._node_id, "actor": child.name},
            )
            self._start(child)

    def ref(self, name: str) -> pykka.ActorRef[Any] | None:
        child = self._children.get(name)
        return child.slot.ref if child else None

    def slot(self, name: str) -> ActorSlot:
        return self._children[name].slot

    def names(self) -> list[str]:
        return list(self._children)

    def restarts(self) -> dict[str, int]:
        return {name: child.restarts for name, child in self._children.items() if child.restarts}

    def stop_child(self, name: str, timeout: float = 5.0) -> None:
        """Stop the actor of role `name` and wait up to `timeout` seconds for it."""
        child = self._children.pop(name, None)
        if child is None:
            return
        # Senders waiting for a replacement of this actor stop waiting.
        child.slot.close()
        if child.slot.ref is None:
            return
        try:
            child.slot.ref.stop(block=True, timeout=timeout)
        except (pykka.Timeout, pykka.ActorDeadError):
            pass
