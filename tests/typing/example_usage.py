"""Code written as a user would write it, for mypy to check in strict mode.

`tests/unit/test_typing.py` and the nox session `typing` run mypy over this
file. It is never run, and pytest does not collect it. Each `assert_type`
states the type that user code must see. Each `# type: ignore[code]` marks a
call that must stay a type error: strict mode warns about an unused ignore, so
the check fails if the error goes away.
"""

from __future__ import annotations

from typing import Any, assert_type

from relay_actors import Error, Job, Ok, Relay, Worker, aio


class Double(Worker[int], queue="math"):
    def perform(self, job: Job) -> int:
        return int(job.args["int"]) * 2


class Greet(Worker[str]):
    def perform(self, job: Job) -> str:
        return f"hello {job.args['name']}"


class Untyped(Worker[Any]):
    def perform(self, job: Job) -> Any:
        return job.args


def insert_and_await() -> None:
    job = Double.new({"int": 2})
    assert_type(job, Job[int])

    relay = Relay.async_(job)
    assert_type(relay, Relay[int])
    assert_type(Relay.async_("reports", job), Relay[int])
    assert_type(Relay.async_(job, instance="reports"), Relay[int])

    result = Relay.await_(relay)
    assert_type(result, Ok[int] | Error)
    assert_type(Relay.await_(relay, timeout=30.0, with_retries=True), Ok[int] | Error)
    if isinstance(result, Ok):
        assert_type(result.value, int)
    assert_type(result.unwrap(), int)


def insert_and_await_many() -> None:
    relays = Relay.async_many([Double.new({"int": i}) for i in range(3)])
    assert_type(relays, list[Relay[int]])
    assert_type(Relay.async_many("reports", [Double.new({"int": 1})]), list[Relay[int]])
    assert_type(Relay.await_many(relays), list[Ok[int] | Error])

    mixed = [Relay.async_(Double.new({"int": 1})), Relay.async_(Greet.new({"name": "ada"}))]
    assert_type(Relay.await_many(mixed), list[Ok[object] | Error])


async def insert_and_await_in_event_loop() -> None:
    relay = await aio.async_(Double.new({"int": 2}))
    assert_type(relay, Relay[int])
    assert_type(await aio.async_("reports", Double.new({"int": 2})), Relay[int])
    assert_type(await aio.await_(relay, timeout=30.0), Ok[int] | Error)

    relays = await aio.async_many([Greet.new({"name": "ada"})], instance="reports")
    assert_type(relays, list[Relay[str]])
    assert_type(await aio.async_many("reports", [Greet.new({"name": "ada"})]), list[Relay[str]])
    assert_type(await aio.await_many(relays, with_retries=True), list[Ok[str] | Error])


def untyped_worker() -> None:
    relay = Relay.async_(Untyped.new({}))
    assert_type(relay, Relay[Any])
    assert_type(Relay.await_(relay), Ok[Any] | Error)


def match_result(relay: Relay[int]) -> int:
    match Relay.await_(relay):
        case Ok(value):
            return value
        case Error(reason):
            raise RuntimeError(f"job failed: {reason}")


def type_errors(relay: Relay[int]) -> None:
    text: str = Relay.await_(relay).unwrap()  # type: ignore[assignment]
    Relay.await_(Double.new({"int": 2}))  # type: ignore[arg-type]
    Relay.async_("reports", Double.new({"int": 2}), instance="other")  # type: ignore[call-overload]
    Relay.async_many(Double.new({"int": 2}))  # type: ignore[call-overload]
    del text


async def type_errors_in_event_loop(relay: Relay[int]) -> None:
    text: str = (await aio.await_(relay)).unwrap()  # type: ignore[assignment]
    await aio.await_(Double.new({"int": 2}))  # type: ignore[arg-type]
    await aio.async_("reports", Double.new({"int": 2}), instance="other")  # type: ignore[call-overload]
    del text
