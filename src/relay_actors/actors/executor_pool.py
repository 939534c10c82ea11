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


class ExecutorPool:
    """The executors of one producer, used only from the producer's thread.

    It hands out idle executors for attempts, takes them back when their
    attempt ends, and keeps a running mean of attempt durations, which
    decides how many jobs the producer claims ahead of need.
    """

    def __init__(self, size: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.size = size
        self._clock = clock
        self._executors: list[pykka.ActorRef[Any]] = []
        self._idle: deque[pykka.ActorRef[Any]] = deque()
        # Start times of the attempts running now, by executor URN.
        self._started_at: dict[str, float] = {}
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
        return len(self._started_at)

    def take(self) -> pykka.ActorRef[Any]:
        """Return an idle executor, now counted as running an attempt.

        Raises:
            IndexError: no executor is idle.
        """
        executor = self._idle.popleft()
        self._started_at[executor.actor_urn] = self._clock()
        return executor

    def give_back(self, executor: pykka.ActorRef[Any]) -> None:
        """Count `executor` idle again, and its attempt's duration in the mean."""
        started = self._started_at.pop(executor.actor_urn, None)
        if started is not None:
            duration = self._clock() - started
            mean = self._mean_duration
            self._mean_duration = (
                duration if mean is None else mean + DURATION_WEIGHT * (duration - mean)
            )
        self._idle.append(executor)

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
