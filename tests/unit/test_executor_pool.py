"""`ExecutorPool`: idle and busy executors, prefetching, and when to wake an executor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from relay_actors.actors.executor_pool import STALLED_SECONDS, ExecutorPool


class Clock:
    """A clock that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Idle(pykka.ThreadingActor):
    """An actor in place of an executor: the pool only starts and stops it."""


@pytest.fixture
def executors() -> Iterator[list[pykka.ActorRef[Any]]]:
    refs = [Idle.start() for _ in range(3)]
    yield refs
    for ref in refs:
        if ref.is_alive():
            ref.stop()


def filled(executors: list[pykka.ActorRef[Any]], clock: Clock) -> ExecutorPool:
    pool = ExecutorPool(len(executors), clock)
    for executor in executors:
        pool.add(executor)
    return pool


def test_pool_counts_idle_and_busy(executors: list[pykka.ActorRef[Any]]) -> None:
    pool = filled(executors, Clock())
    first = pool.take()
    second = pool.take()
    assert (pool.idle, pool.busy) == (1, 2)
    pool.give_back(first)
    assert (pool.idle, pool.busy) == (2, 1)
    assert pool.take() is not second


def test_pool_take_without_idle_raises(executors: list[pykka.ActorRef[Any]]) -> None:
    pool = filled(executors, Clock())
    for _ in executors:
        pool.take()
    with pytest.raises(IndexError):
        pool.take()


def test_pool_prefetches_only_short_attempts(executors: list[pykka.ActorRef[Any]]) -> None:
    pool = filled(executors, Clock())
    # No attempt has ended yet, so nothing is known about their duration.
    assert pool.prefetch_limit() == 0
    pool.count_attempt(0.005)
    assert pool.prefetch_limit() == 3
    pool.count_attempt(1.0)
    # The mean is now 0.005 + 0.2 * (1.0 - 0.005), far above 20 ms.
    assert pool.prefetch_limit() == 0


def test_pool_mean_follows_recent_attempts(executors: list[pykka.ActorRef[Any]]) -> None:
    pool = filled(executors, Clock())
    pool.count_attempt(0.1)
    assert pool.prefetch_limit() == 0
    # Short attempts pull the running mean below 20 ms after some rounds.
    for _ in range(20):
        pool.count_attempt(0.001)
    assert pool.prefetch_limit() == 3


def test_pool_give_back_unknown_stays_idle(executors: list[pykka.ActorRef[Any]]) -> None:
    """An executor given back without a take (never ran an attempt) is idle, not busy."""
    pool = ExecutorPool(1, Clock())
    pool.give_back(executors[0])
    assert (pool.idle, pool.busy) == (1, 0)
    assert pool.prefetch_limit() == 0


def test_pool_wakes_without_durations(executors: list[pykka.ActorRef[Any]]) -> None:
    pool = filled(executors, Clock())
    assert not pool.should_wake(0)
    assert pool.should_wake(1)
    pool.take()
    # A busy executor, but no attempt has ended: its pace is unknown.
    assert pool.should_wake(1)


def test_pool_leaves_short_backlog(executors: list[pykka.ActorRef[Any]]) -> None:
    clock = Clock()
    pool = filled(executors, clock)
    pool.count_attempt(0.0001)
    pool.take()
    # 10 jobs of 0.1 ms: 1 ms of work, within BACKLOG_SECONDS for one executor.
    assert not pool.should_wake(10)
    # 30 jobs are 3 ms of work: another executor is woken.
    assert pool.should_wake(30)
    second = pool.take()
    assert not pool.should_wake(30)
    pool.give_back(second)
    pool.count_attempt(0.01)
    # Slower attempts: the mean is now 2.1 ms, more than the backlog allows.
    assert pool.should_wake(1)


def test_pool_skips_stalled_executor(executors: list[pykka.ActorRef[Any]]) -> None:
    clock = Clock()
    pool = filled(executors, clock)
    pool.count_attempt(0.0001)
    executor = pool.take()
    assert not pool.should_wake(1)
    clock.now += STALLED_SECONDS + 0.001
    # Its attempt has run for longer than STALLED_SECONDS: a waiting job
    # would wait for it, so another executor is woken.
    assert pool.should_wake(1)
    pool.began_next(executor)
    assert not pool.should_wake(1)


def test_pool_without_idle_wakes_none(executors: list[pykka.ActorRef[Any]]) -> None:
    pool = filled(executors, Clock())
    for _ in executors:
        pool.take()
    assert not pool.should_wake(5)


def test_pool_stop_stops_every_executor(executors: list[pykka.ActorRef[Any]]) -> None:
    pool = filled(executors, Clock())
    pool.take()
    pool.stop()
    assert not any(executor.is_alive() for executor in executors)
