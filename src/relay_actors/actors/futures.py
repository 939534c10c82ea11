"""`CallbackFuture`: a pykka future that calls back when it gets its result.

pykka's `ThreadingFuture` only offers a blocking `get()`. An asyncio caller
needs to learn of a result without parking a thread on each future, so the
mailbox hands out this subclass, and the caller registers a callback that
wakes its event loop.
"""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable
from typing import Any, TypeVar

from pykka import ThreadingFuture

T = TypeVar("T")

logger = logging.getLogger("relay_actors.mailbox")


class CallbackFuture(ThreadingFuture[T]):
    """A `ThreadingFuture` that runs callbacks once its value or exception is set.

    Callbacks run on the thread that sets the future (usually an actor's
    thread), or at once on the registering thread if the future is already
    done. They must be quick and must not block. An exception from a callback
    is logged and does not reach the setter.
    """

    def __init__(self) -> None:
        super().__init__()
        self._callbacks: list[Callable[[], None]] = []

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Run `callback()` once the future is done: now, if it already is."""
        with self._condition:
            if self._result is None:
                self._callbacks.append(callback)
                return
        _run(callback)

    def done(self) -> bool:
        """Tell whether the future has a value or an exception."""
        with self._condition:
            return self._result is not None

    def set(self, value: Any | None = None) -> None:
        super().set(value)
        self._run_callbacks()

    def offer(self, value: Any) -> bool:
        """Set `value` unless the future is done already; return True if it was set.

        The listener and the mailbox may both resolve one waiting future, and
        the first value wins.
        """
        try:
            self.set(value)
        except queue.Full:
            return False
        return True

    def set_exception(self, exc_info: Any = None) -> None:
        super().set_exception(exc_info)
        self._run_callbacks()

    def _run_callbacks(self) -> None:
        with self._condition:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            _run(callback)


def _run(callback: Callable[[], None]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("a future's done callback failed", extra={"action": "callback_failed"})
