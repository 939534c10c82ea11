"""The steps of an await that may block, and the runner that performs them on the calling thread.

The await logic in `awaiting` is a generator: it yields a step whenever it
needs a mailbox's reply, a result, a database read or a pause, and gets back
the step's result or exception. `run_blocking` performs the steps on the
calling thread, and `relay_actors.aio` performs them in an asyncio event loop
without blocking it. So the deadline, partial results, row re-reads and
transaction checks exist once for both.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

import pykka

from relay_actors.actors.futures import CallbackFuture
from relay_actors.actors.messages import AwaitRefs, Forget

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Ask:
    """Send `message` to `mailbox`; its reply, one future per ref, is due within `timeout` s.

    The runner returns the reply, or raises `pykka.Timeout` or
    `pykka.ActorDeadError` into the await.
    """

    mailbox: pykka.ActorRef[Any]
    message: AwaitRefs
    timeout: float


@dataclass(frozen=True, slots=True)
class Collect:
    """Wait up to `timeout` seconds for every future, then return the resolved ones.

    The runner returns a dict from each resolved future's key to its value, in
    the order of `futures`. A timeout of 0 only takes what is already there.
    """

    futures: dict[int, pykka.ThreadingFuture[Any]]
    timeout: float


@dataclass(frozen=True, slots=True)
class Call:
    """Run `function(*args)`, a call that blocks on the database, and return its result."""

    function: Callable[..., Any]
    args: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Pause:
    """Sleep for `seconds`."""

    seconds: float


Step: TypeAlias = Ask | Collect | Call | Pause
Steps: TypeAlias = Generator[Step, Any, T]


@dataclass(frozen=True, slots=True)
class Finished(Generic[T]):
    """The value that the generator of an await returned."""

    value: T


def advance(steps: Steps[T], value: Any, error: Exception | None) -> Step | Finished[T]:
    """Send the last step's `value` into `steps`, or raise its `error` there.

    Returns the next step, or `Finished` with the value the generator returned.
    """
    try:
        return steps.send(value) if error is None else steps.throw(error)
    except StopIteration as stop:
        return Finished(stop.value)


def run_blocking(steps: Steps[T]) -> T:
    """Run the generator `steps` to its end on this thread, performing each step it yields.

    A step's exception is raised inside the generator, which handles it or
    lets it propagate. The generator is closed on the way out, so its
    `finally` clauses run even if this thread is interrupted.
    """
    try:
        value: Any = None
        error: Exception | None = None
        while not isinstance(step := advance(steps, value, error), Finished):
            value, error = None, None
            try:
                value = _perform(step)
            except Exception as raised:  # noqa: BLE001 - raised inside the generator instead
                error = raised
        return step.value
    finally:
        steps.close()


def _perform(step: Step) -> Any:
    if isinstance(step, Ask):
        reply = step.mailbox.ask(step.message, block=False)
        try:
            return reply.get(timeout=step.timeout)
        except pykka.Timeout:
            forget_late_reply(step, reply)
            raise
    if isinstance(step, Collect):
        return take_resolved(step.futures, time.monotonic() + step.timeout)
    if isinstance(step, Call):
        return step.function(*step.args)
    time.sleep(step.seconds)
    return None


def take_resolved(
    futures: dict[int, pykka.ThreadingFuture[Any]], deadline: float
) -> dict[int, Any]:
    """Return the value of each future that resolves by the monotonic `deadline`, by key."""
    values: dict[int, Any] = {}
    for key, future in futures.items():
        try:
            values[key] = future.get(timeout=max(0.0, deadline - time.monotonic()))
        except pykka.Timeout:
            continue
    return values


def forget_late_reply(step: Ask, reply: pykka.Future[Any]) -> None:
    """Release the waits that a reply arriving after its caller stopped waiting registers.

    The mailbox registers one waiting future per ref when it handles the
    message, even if the caller timed out or was cancelled before the reply
    came. Once the reply arrives, a `Forget` message makes the mailbox drop them.
    """
    if not isinstance(reply, CallbackFuture):
        return
    refs = [ref for ref, _ in step.message.items]

    def forget() -> None:
        try:
            futures = reply.get(timeout=0)
        except pykka.ActorDeadError:
            return
        try:
            step.mailbox.tell(Forget(tuple(zip(refs, futures, strict=True))))
        except pykka.ActorDeadError:
            return

    reply.add_done_callback(forget)
