"""The Relay calls as coroutines, for asyncio programs: `await aio.await_(relay)`.

Each coroutine takes the arguments of the `Relay` static method of the same
name and returns the same results. They run on the same actors and share the
await logic of the blocking calls. They do not block the event loop on the
database or on a result (job validation, which is CPU work, runs on the loop):

- an insert runs on a thread of the loop's default executor, because the
  database call blocks;
- results go to the mailbox of the thread that runs the event loop, which
  lives as long as the loop does;
- an await waits on the mailbox's futures through callbacks that wake the
  loop, so any number of awaits share the loop's thread, and only database
  reads (a row re-read, a transaction check) run on an executor thread.

Cancelling the task that awaits a relay stops the wait and releases the
mailbox's waiting futures. The job runs on, and a later await of the same
relay still returns its result. Cancelling `async_` or `async_many` after its
insert started does not stop the insert, so the job may exist.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from typing import Any, TypeVar, overload

import psycopg
import pykka

from relay_actors.actors.futures import CallbackFuture
from relay_actors.await_steps import (
    Ask,
    Call,
    Collect,
    Finished,
    Step,
    Steps,
    advance,
    forget_late_reply,
    take_resolved,
)
from relay_actors.awaiting import wait_for_results
from relay_actors.instances import get_instance
from relay_actors.job import Job
from relay_actors.relay import DEFAULT_TIMEOUT, Relay, _check_relays, _insert, _split_arguments
from relay_actors.results import Error, Ok

T = TypeVar("T")

__all__ = ["async_", "async_many", "await_", "await_many"]


@overload
async def async_(
    job: Job[T], /, *, instance: str | None = None, conn: psycopg.Connection[Any] | None = None
) -> Relay[T]: ...


@overload
async def async_(
    instance: str, job: Job[T], /, *, conn: psycopg.Connection[Any] | None = None
) -> Relay[T]: ...


async def async_(
    *args: Any, instance: str | None = None, conn: psycopg.Connection[Any] | None = None
) -> Relay[Any]:
    """Validate and insert a job, returning its `Relay`; see `Relay.async_`.

    `conn` is a blocking `psycopg.Connection`, used on an executor thread.

    Raises:
        InvalidJobError: the job is invalid; nothing was inserted.
        InstanceNotFoundError: no running instance has that name.
    """
    name, jobs = _split_arguments("async_", args, instance, many=False)
    relays = await _insert_from_loop(name, jobs, conn)
    return relays[0]


@overload
async def async_many(
    jobs: Sequence[Job[T]],
    /,
    *,
    instance: str | None = None,
    conn: psycopg.Connection[Any] | None = None,
) -> list[Relay[T]]: ...


@overload
async def async_many(
    instance: str, jobs: Sequence[Job[T]], /, *, conn: psycopg.Connection[Any] | None = None
) -> list[Relay[T]]: ...


async def async_many(
    *args: Any, instance: str | None = None, conn: psycopg.Connection[Any] | None = None
) -> list[Relay[Any]]:
    """Validate every job, then insert all in one statement; return relays in input order."""
    name, jobs = _split_arguments("async_many", args, instance, many=True)
    if not jobs:
        return []
    return await _insert_from_loop(name, jobs, conn)


async def await_(
    relay: Relay[T], timeout: float = DEFAULT_TIMEOUT, *, with_retries: bool = False
) -> Ok[T] | Error:
    """Wait until the relay's job has a result, or `timeout` seconds pass; see `Relay.await_`."""
    relays = _check_relays("await_", [relay])
    results = await _run(wait_for_results(relays, timeout, with_retries))
    return results[0]


async def await_many(
    relays: Sequence[Relay[T]],
    timeout: float = DEFAULT_TIMEOUT,
    *,
    with_retries: bool = False,
) -> list[Ok[T] | Error]:
    """Await all relays by one shared deadline; return results in input order.

    Relays without a result at the deadline get `Error(Reason.TIMEOUT)`.
    """
    checked = _check_relays("await_many", relays)
    return await _run(wait_for_results(checked, timeout, with_retries))


async def _insert_from_loop(
    name: str, jobs: list[Job], conn: psycopg.Connection[Any] | None
) -> list[Relay[Any]]:
    instance = get_instance(name)
    instance.check_usable()
    # The mailbox of an executor thread would stop if the executor ended that
    # thread, so the results go to the loop thread's mailbox instead.
    mailbox = instance.mailbox()
    return await asyncio.to_thread(_insert, instance, jobs, conn, mailbox)


async def _run(steps: Steps[T]) -> T:
    """Run the generator `steps` to its end, performing each step it yields in this loop.

    A step's exception is raised inside the generator. Cancellation closes
    the generator, so its `finally` clauses release what it holds.
    """
    runner = _LoopRunner(asyncio.get_running_loop())
    try:
        value: Any = None
        error: Exception | None = None
        while not isinstance(step := advance(steps, value, error), Finished):
            value, error = None, None
            try:
                value = await runner.perform(step)
            except Exception as raised:  # noqa: BLE001 - raised inside the generator instead
                error = raised
        return step.value
    finally:
        steps.close()


class _LoopRunner:
    """Performs the steps of one await in an event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._bridges: dict[CallbackFuture[Any], asyncio.Future[Any]] = {}

    async def perform(self, step: Step) -> Any:
        if isinstance(step, Ask):
            return await self._ask(step)
        if isinstance(step, Collect):
            if step.timeout > 0:
                waiting = [self._bridge(future) for future in step.futures.values()]
                if waiting:
                    await asyncio.wait(waiting, timeout=step.timeout)
            return take_resolved(step.futures, deadline=0.0)
        if isinstance(step, Call):
            return await asyncio.to_thread(step.function, *step.args)
        await asyncio.sleep(step.seconds)
        return None

    async def _ask(self, step: Ask) -> Any:
        reply = step.mailbox.ask(step.message, block=False)
        try:
            return await asyncio.wait_for(self._bridge(reply), step.timeout)
        except TimeoutError:
            forget_late_reply(step, reply)
            raise pykka.Timeout(f"mailbox did not reply within {step.timeout} s") from None
        except asyncio.CancelledError:
            forget_late_reply(step, reply)
            raise

    def _bridge(self, future: pykka.Future[Any]) -> asyncio.Future[Any]:
        """Return an asyncio future of this loop that gets the pykka future's outcome."""
        if not isinstance(future, CallbackFuture):
            raise TypeError(
                f"expected a CallbackFuture from a RelayRefActor, got {type(future).__name__}"
            )
        bridged = self._bridges.get(future)
        if bridged is None:
            bridged = self._loop.create_future()
            future.add_done_callback(functools.partial(_wake, self._loop, future, bridged))
            self._bridges[future] = bridged
        return bridged


def _wake(
    loop: asyncio.AbstractEventLoop, source: pykka.Future[Any], target: asyncio.Future[Any]
) -> None:
    """Hand the outcome of `source` to `target`; runs on the thread that set `source`."""
    try:
        loop.call_soon_threadsafe(_settle, source, target)
    except RuntimeError:
        # The loop is closed, so no task awaits `target` any more.
        return


def _settle(source: pykka.Future[Any], target: asyncio.Future[Any]) -> None:
    if target.done():
        return
    try:
        value = source.get(timeout=0)
    except Exception as error:  # noqa: BLE001 - handed to the awaiting task
        target.set_exception(error)
    else:
        target.set_result(value)
