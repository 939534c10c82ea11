"""Telemetry events: measurements that relay_actors emits, and the handlers attached to them.

An event name is a tuple of strings such as `("relay_actors", "job", "stop")`.
A handler is any callable taking `(event, measurements, metadata)`, two dicts:
measurements hold numbers (seconds, counts) and metadata the ids and labels
that describe them. The model is Erlang's `telemetry` library, which Oban uses.

    from relay_actors import telemetry

    def record(event, measurements, metadata):
        durations.observe(measurements["duration"], queue=metadata["queue"])

    telemetry.attach("job-durations", [telemetry.JOB_STOP], record)

Contract:

- A handler runs on the thread that emits the event: an executor's thread
  for job events, the listener's thread for listener events, the awaiting
  caller's thread for relay events (with `relay_actors.aio`, the thread that
  runs the awaiting code). It delays that actor or caller for as long as it
  runs, so it must be quick and must not block. Hand slow work (network
  calls, disk writes) to a queue of your own.
- A handler that raises an `Exception` is detached and logged once, with its
  id and the traceback, and the event goes on to the other handlers, so the
  error never reaches the actor that emitted the event. Only a
  `BaseException` that is not an `Exception` (`KeyboardInterrupt`,
  `SystemExit`) propagates.
- With no handler attached to an event, emitting it costs one dict lookup:
  the emit points check `enabled(event)` before they build any dict.
- `attach` and `detach` are thread-safe and may run while events are emitted.
  Handlers must not change the dicts they receive, since every handler of an
  event gets the same ones.

The events and their keys are listed in docs/guide.md, section "Telemetry".
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

from relay_actors.errors import RelayError

logger = logging.getLogger("relay_actors.telemetry")

Event: TypeAlias = tuple[str, ...]
Handler: TypeAlias = Callable[[Event, dict[str, Any], dict[str, Any]], object]

JOB_START: Event = ("relay_actors", "job", "start")
JOB_STOP: Event = ("relay_actors", "job", "stop")
JOB_EXCEPTION: Event = ("relay_actors", "job", "exception")
RELAY_DELIVERED: Event = ("relay_actors", "relay", "delivered")
RELAY_TIMEOUT: Event = ("relay_actors", "relay", "timeout")
LISTENER_CONNECTED: Event = ("relay_actors", "listener", "connected")
LISTENER_DISCONNECTED: Event = ("relay_actors", "listener", "disconnected")

EVENTS: frozenset[Event] = frozenset(
    {
        JOB_START,
        JOB_STOP,
        JOB_EXCEPTION,
        RELAY_DELIVERED,
        RELAY_TIMEOUT,
        LISTENER_CONNECTED,
        LISTENER_DISCONNECTED,
    }
)
# Event names under this first part are reserved for the events above.
NAMESPACE = "relay_actors"


class DuplicateHandlerError(RelayError, ValueError):
    """A handler with the same id is already attached."""


_lock = threading.Lock()
# Handler id -> (events, handler). Changed only under _lock.
_attached: dict[str, tuple[tuple[Event, ...], Handler]] = {}
# Event -> (handler id, handler) pairs. Rebuilt under _lock and replaced as a
# whole, so emitters read it without the lock. It has no key without handlers.
_by_event: dict[Event, tuple[tuple[str, Handler], ...]] = {}


def attach(handler_id: str, events: Iterable[Event], handler: Handler) -> None:
    """Attach `handler` to each event in `events`, under `handler_id`.

    Raises:
        DuplicateHandlerError: a handler with this id is already attached.
        ValueError: an event name is invalid, or names an unknown relay_actors event.
        TypeError: `handler_id` is not a string, `handler` is not callable, or
            `events` is a single event name instead of a list of them.
    """
    if not isinstance(handler_id, str) or not handler_id:
        raise TypeError(f"handler_id must be a non-empty string, got {handler_id!r}")
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {type(handler).__name__}")
    names = _validate_events(events)
    with _lock:
        if handler_id in _attached:
            raise DuplicateHandlerError(
                f"a telemetry handler with id {handler_id!r} is already attached; "
                "detach it first or choose another id"
            )
        _attached[handler_id] = (names, handler)
        _rebuild()


def detach(handler_id: str) -> bool:
    """Detach the handler attached under `handler_id`; return False if none was.

    An emit that had already started on another thread may still call the
    handler once after this returns, because emitters read no lock.
    """
    with _lock:
        if _attached.pop(handler_id, None) is None:
            return False
        _rebuild()
        return True


@contextmanager
def attached(handler_id: str, events: Iterable[Event], handler: Handler) -> Iterator[None]:
    """Attach `handler` for the duration of a `with` block, then detach it.

    Raises the same errors as `attach`.
    """
    attach(handler_id, events, handler)
    try:
        yield
    finally:
        detach(handler_id)


def enabled(event: Event) -> bool:
    """Return whether any handler is attached to `event`.

    Emit points call this before they build the dicts of `execute`.
    """
    return event in _by_event


def execute(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Call every handler attached to `event`, on this thread, in attach order.

    A handler that raises an `Exception` is detached and logged, and the
    others still run, so the call raises only a handler's `BaseException`
    that is not an `Exception`.
    """
    for handler_id, handler in _by_event.get(event, ()):
        try:
            handler(event, measurements, metadata)
        except Exception:  # noqa: BLE001 - a handler's error must not reach the emitter
            _detach_failed(handler_id, handler, event)


def _detach_failed(handler_id: str, handler: Handler, event: Event) -> None:
    """Detach a handler that raised, logging it once even if several threads saw it raise."""
    with _lock:
        current = _attached.get(handler_id)
        # The id may have been detached, or attached again with a new handler, meanwhile.
        if current is None or current[1] is not handler:
            return
        del _attached[handler_id]
        _rebuild()
    logger.error(
        "telemetry handler %r raised on event %s and was detached",
        handler_id,
        event,
        exc_info=True,
        extra={"action": "telemetry_handler_detached", "handler_id": handler_id},
    )


def _rebuild() -> None:
    """Replace `_by_event` with a fresh index of `_attached`. Call it with `_lock` acquired."""
    global _by_event
    by_event: dict[Event, list[tuple[str, Handler]]] = {}
    for handler_id, (names, handler) in _attached.items():
        for name in names:
            by_event.setdefault(name, []).append((handler_id, handler))
    _by_event = {name: tuple(pairs) for name, pairs in by_event.items()}


def _validate_events(events: Iterable[Event]) -> tuple[Event, ...]:
    """Return the distinct event names of `events` in order, or raise naming the invalid one."""
    if isinstance(events, tuple) and events and all(isinstance(part, str) for part in events):
        raise TypeError(
            f"events must be a list of event names, got the single name {events!r}; "
            f"pass [{events!r}]"
        )
    names: list[Event] = []
    for event in events:
        if (
            not isinstance(event, tuple)
            or not event
            or not all(isinstance(part, str) and part for part in event)
        ):
            raise ValueError(
                f"invalid telemetry event {event!r}: an event name is a non-empty tuple "
                "of non-empty strings, such as ('relay_actors', 'job', 'stop')"
            )
        if event[0] == NAMESPACE and event not in EVENTS:
            known = ", ".join(repr(name) for name in sorted(EVENTS))
            raise ValueError(f"unknown relay_actors telemetry event {event!r}; known: {known}")
        if event not in names:
            names.append(event)
    if not names:
        raise ValueError("events is empty: attach a handler to at least one event")
    return tuple(names)
