"""`ExecutorPool`: a producer's executors, which of them are idle, and how long attempts take."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import pykka

# Seconds that stop() waits in all for the executors to stop.
STOP_SECONDS = 1.0
# Jobs are claimed ahead of free executors only while attempts take less than
# this on average. Then a claim's round trip and commit (0.4 to 1 ms measured on
# 2 cores) is a large share of each job's time, and jobs held back from other
# nodes start soon.
PREFETCH_MAX_SECONDS = 0.02
# Weight of the newest attempt in the running mean of attempt durations.
DURATION_WEIGHT = 0.2
# Another executor is woken only if the busy ones would need more than this to
# run every waiting job. With jobs that do no work, waking fewer executors saved
# about 30 µs of worker CPU per job, measured on 2 cores.
BACKLOG_SECONDS = 0.002
# A busy executor whose current attempt began longer ago than this is not
# counted on to run waiting jobs soon.
STALLED_SECONDS = 0.005


class ExecutorPool:
    """The executors of one producer, used only from the producer's thread.

    It hands out idle executors, takes them back when they run out of
    jobs, and keeps a running mean of attempt durations, which decides how
    many jobs the producer claims ahead of need, and whether a waiting job
    needs another executor woken (`should_wake`). A busy executor may run
    several attempts in a row, taking each next job from `ReadyJobs` itself.
    """

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self._clock = clock
        self._executors: list[pykka.ActorRef[Any]] = []
        self._idle: deque[pykka.ActorRef[Any]] = deque()
        # When the current attempt of each busy executor began, by executor URN,
        # as of the executor's last report.
        self._since: dict[str, float] = {}
        self._mean_duration: float | None = None

    def add(self, executor: pykka.ActorRef[Any]) -> None:
        """Add an idle executor."""
        self._executors.append(executor)
        self._idle.append(executor)

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def busy(self) -> int:
        return len(self._since)

    def take(self) -> pykka.ActorRef[Any]:
        """Return an idle executor, now counted busy with an attempt that begins now.

        Raises:
            IndexError: no executor is idle.
        """
        executor = self._idle.popleft()
        self._since[executor.actor_urn] = self._clock()
        return executor

    def began_next(self, executor: pykka.ActorRef[Any]) -> None:
        """Note that busy `executor` began another attempt just now."""
        if executor.actor_urn in self._since:
            self._since[executor.actor_urn] = self._clock()

    def give_back(self, executor: pykka.ActorRef[Any]) -> None:
        """Count `executor` idle again."""
        self._since.pop(executor.actor_urn, None)
        self._idle.append(executor)

    def should_wake(self, waiting: int) -> bool:
        """Return True if `waiting` jobs need an idle executor woken to start soon.

        They do unless busy executors, none of them stalled on a long
        attempt, would run them all within `BACKLOG_SECONDS` at the mean
        attempt duration.
        """
        mean = self._mean_duration
        if not self._idle or waiting == 0:
            return False
        if mean is None:
            return True
        recent = self._clock() - STALLED_SECONDS
        running = sum(1 for since in self._since.values() if since >= recent)
        return waiting * mean > running * BACKLOG_SECONDS

    def count_attempt(self, seconds: float) -> None:
        """Count an attempt that ran for `seconds` in the mean duration."""
        mean = self._mean_duration
        self._mean_duration = seconds if mean is None else mean + DURATION_WEIGHT * (seconds - mean)

    def prefetch_limit(self) -> int:
        """Return how many claimed jobs may wait for an executor."""
        mean = self._mean_duration
        if mean is None or mean >= PREFETCH_MAX_SECONDS:
            return 0
        return self.size

    def stop(self, timeout: float | None = STOP_SECONDS) -> None:
        """Stop every executor, waiting up to `timeout` seconds in all, or not at all if None.

        Idle executors stop at once. One still running an attempt stops
        after the attempt returns.
        """
        for executor in self._executors:
            executor.stop(block=False)
        if timeout is None:
            return
        deadline = time.monotonic() + timeout
        for executor in self._executors:
            executor.actor_stopped.wait(max(0.0, deadline - time.monotonic()))
