"""`relay_actors.aio`: the Relay calls as coroutines that never block the event loop."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from relay_actors import (
    Error,
    Instance,
    InvalidJobError,
    Ok,
    Reason,
    Relay,
    RelayNotCommitted,
    aio,
    codec,
)
from relay_actors.wire import MAX_PAYLOAD_BYTES
from tests.conftest import job_state, wait_until
from tests.workers import Blob, Double, Echo, Sleep, WaitsForFile, blob

RESULT_TIMEOUT = 10.0
# How late an await may return after its deadline on a loaded 2-core machine.
DEADLINE_SLACK_SECONDS = 0.5
TICK_SECONDS = 0.01
# The largest gap between two ticks of a 10 ms ticker that an await may cause.
# It leaves room for garbage collection and other tests' processes on 2 cores.
MAX_TICK_GAP_SECONDS = 0.1
CONCURRENT_AWAITS = 1_000
# Threads that 1,000 awaits may add to the process: the default executor's
# threads and one mailbox, far fewer than one thread per await.
MAX_EXTRA_THREADS = 50


@pytest.fixture
def instance(start_instance: Callable[..., Instance]) -> Instance:
    return start_instance()


async def tick(stop: asyncio.Event, ticks: list[float]) -> None:
    """Record the loop's time every TICK_SECONDS until `stop` is set."""
    while not stop.is_set():
        ticks.append(time.monotonic())
        await asyncio.sleep(TICK_SECONDS)
    ticks.append(time.monotonic())


def largest_gap(ticks: list[float]) -> float:
    return max(later - earlier for earlier, later in itertools.pairwise(ticks))


def mailbox_waiting(relay: Relay[Any]) -> int:
    """Return how many futures wait in the relay's mailbox."""
    statistics: dict[str, int] = relay.mailbox.proxy().statistics().get(timeout=5)
    return statistics["waiting"]


def test_await_leaves_loop_free(instance: Instance) -> None:
    async def main() -> tuple[Any, list[float]]:
        relay = await aio.async_(instance.name, Sleep.new({"seconds": 1.0, "value": "slept"}))
        stop = asyncio.Event()
        ticks: list[float] = []
        ticker = asyncio.create_task(tick(stop, ticks))
        result = await aio.await_(relay, timeout=RESULT_TIMEOUT)
        stop.set()
        await ticker
        return result, ticks

    result, ticks = asyncio.run(main())

    assert result == Ok("slept")
    assert ticks[-1] - ticks[0] >= 1.0
    assert largest_gap(ticks) < MAX_TICK_GAP_SECONDS


@pytest.mark.timeout(180)
def test_thousand_concurrent_awaits(instance: Instance) -> None:
    threads_before = threading.active_count()
    threads_during: list[int] = []

    async def count_threads(stop: asyncio.Event) -> None:
        while not stop.is_set():
            threads_during.append(threading.active_count())
            await asyncio.sleep(0.05)

    async def main() -> list[Ok[int] | Error]:
        jobs = [Double.new({"int": i}) for i in range(CONCURRENT_AWAITS)]
        relays = await aio.async_many(instance.name, jobs)
        stop = asyncio.Event()
        counter = asyncio.create_task(count_threads(stop))
        results = await asyncio.gather(*(aio.await_(relay, timeout=120.0) for relay in relays))
        stop.set()
        await counter
        return results

    results = asyncio.run(main())

    assert results == [Ok(2 * i) for i in range(CONCURRENT_AWAITS)]
    assert max(threads_during) - threads_before < MAX_EXTRA_THREADS


def test_concurrent_inserts_resolve(instance: Instance) -> None:
    async def main() -> list[Ok[Any] | Error]:
        inserts = [aio.async_(instance.name, Echo.new({"value": i})) for i in range(100)]
        relays = await asyncio.gather(*inserts)
        return await aio.await_many(relays, timeout=RESULT_TIMEOUT)

    assert asyncio.run(main()) == [Ok(i) for i in range(100)]


def test_await_many_order_and_partial(instance: Instance) -> None:
    deadline = 0.8
    jobs = [
        Echo.new({"value": "quick"}),
        Sleep.new({"seconds": 2.5, "value": "slow"}),
        Sleep.new({"seconds": 0.1, "value": "short"}),
        Sleep.new({"seconds": 2.5, "value": "slow"}),
    ]

    async def main() -> tuple[list[Ok[Any] | Error], float]:
        relays = [await aio.async_(instance.name, job) for job in jobs]
        started = time.monotonic()
        results = await aio.await_many(relays, timeout=deadline)
        return results, time.monotonic() - started

    results, elapsed = asyncio.run(main())

    assert elapsed >= deadline
    assert elapsed <= deadline + DEADLINE_SLACK_SECONDS
    assert results == [
        Ok("quick"),
        Error(Reason.TIMEOUT),
        Ok("short"),
        Error(Reason.TIMEOUT),
    ]


def test_timeout_returns_error_in_time(instance: Instance) -> None:
    timeout = 0.5

    async def main() -> tuple[Ok[Any] | Error, float, Ok[Any] | Error]:
        relay = await aio.async_(instance.name, Sleep.new({"seconds": 1.5, "value": "late"}))
        started = time.monotonic()
        early = await aio.await_(relay, timeout=timeout)
        elapsed = time.monotonic() - started
        later = await aio.await_(relay, timeout=RESULT_TIMEOUT)
        return early, elapsed, later

    early, elapsed, later = asyncio.run(main())

    assert early == Error(Reason.TIMEOUT)
    assert elapsed >= timeout
    assert elapsed <= timeout + DEADLINE_SLACK_SECONDS
    assert later == Ok("late")


def test_cancel_leaves_job_running(
    instance: Instance, db: psycopg.Connection[Any], prefix: str
) -> None:
    async def main() -> tuple[Relay[Any], Ok[Any] | Error]:
        relay = await aio.async_(instance.name, Sleep.new({"seconds": 1.0, "value": "finished"}))
        task = asyncio.create_task(aio.await_(relay, timeout=RESULT_TIMEOUT))
        while mailbox_waiting(relay) == 0:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert task.cancelled()
        return relay, await aio.await_(relay, timeout=RESULT_TIMEOUT)

    relay, result = asyncio.run(main())

    assert result == Ok("finished")
    assert job_state(db, prefix, relay.job.id) == "completed"
    wait_until(
        lambda: mailbox_waiting(relay) == 0,
        timeout=5.0,
        message=lambda: f"{mailbox_waiting(relay)} futures still wait in the mailbox",
    )


def test_cancel_releases_waiting_futures(
    instance: Instance, db: psycopg.Connection[Any], prefix: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    job = WaitsForFile.new({"path": str(release), "seconds": RESULT_TIMEOUT})

    async def main() -> Relay[Any]:
        relay = await aio.async_(instance.name, job)
        tasks = [asyncio.create_task(aio.await_(relay, timeout=RESULT_TIMEOUT)) for _ in range(5)]
        while mailbox_waiting(relay) < len(tasks):
            await asyncio.sleep(0.01)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return relay

    relay = asyncio.run(main())

    wait_until(
        lambda: mailbox_waiting(relay) == 0,
        timeout=2.0,
        message=lambda: f"{mailbox_waiting(relay)} futures still wait in the mailbox",
    )
    assert job_state(db, prefix, relay.job.id) == "executing"
    release.touch()
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("released")


def test_result_read_from_row(instance: Instance) -> None:
    size = 7_000
    value = blob(size, seed=1)
    assert len(codec.encode(value)) > MAX_PAYLOAD_BYTES * 3 // 4

    async def main() -> Ok[Any] | Error:
        relay = await aio.async_(instance.name, Blob.new({"size": size, "seed": 1}))
        return await aio.await_(relay, timeout=RESULT_TIMEOUT)

    assert asyncio.run(main()) == Ok(value)


def test_relay_from_blocking_call(instance: Instance) -> None:
    relay = Relay.async_(instance.name, Double.new({"int": 21}))
    assert asyncio.run(aio.await_(relay, timeout=RESULT_TIMEOUT)) == Ok(42)


def test_relay_awaited_from_other_thread(instance: Instance) -> None:
    relay = asyncio.run(aio.async_(instance.name, Double.new({"int": 4})))
    results: list[Ok[int] | Error] = []
    thread = threading.Thread(target=lambda: results.append(Relay.await_(relay, RESULT_TIMEOUT)))
    thread.start()
    thread.join(RESULT_TIMEOUT + 5)
    assert results == [Ok(8)]


def test_transaction_insert(instance: Instance, database_dsn: str) -> None:
    async def main(conn: psycopg.Connection[Any]) -> Ok[Any] | Error:
        relay = await aio.async_(instance.name, Echo.new({"value": "committed"}), conn=conn)
        with pytest.raises(RelayNotCommitted):
            await aio.await_(relay, timeout=1.0)
        await asyncio.to_thread(conn.commit)
        return await aio.await_(relay, timeout=RESULT_TIMEOUT)

    with psycopg.connect(database_dsn) as conn:
        assert asyncio.run(main(conn)) == Ok("committed")


def test_invalid_arguments_raise(instance: Instance) -> None:
    with pytest.raises(InvalidJobError, match="expected a Job"):
        asyncio.run(aio.async_(instance.name, "not a job"))  # type: ignore[call-overload]
    with pytest.raises(InvalidJobError, match="list of jobs"):
        asyncio.run(aio.async_many(instance.name, Echo.new({"value": 1})))  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="await_ takes relays"):
        asyncio.run(aio.await_("not a relay"))  # type: ignore[arg-type]
    assert asyncio.run(aio.async_many(instance.name, [])) == []


def test_relay_whose_thread_ended(instance: Instance) -> None:
    relays: list[Relay[int]] = []
    inserter = threading.Thread(
        target=lambda: relays.append(Relay.async_(instance.name, Double.new({"int": 5})))
    )
    inserter.start()
    inserter.join(RESULT_TIMEOUT)
    wait_until(
        lambda: not relays[0].mailbox.is_alive(),
        timeout=5.0,
        message="the ended thread's mailbox is still alive",
    )
    assert asyncio.run(aio.await_(relays[0], timeout=RESULT_TIMEOUT)) == Ok(10)
