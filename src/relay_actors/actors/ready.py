"""`ReadyJobs`: the jobs a producer claimed that wait for an executor."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable

from relay_actors.actors.attempts import RunningAttempts
from relay_actors.job import Job


class ReadyJobs:
    """Claimed jobs of one producer that no executor has started, oldest claim first.

    The producer adds the jobs it claims and starts them on idle executors.
    An executor that finishes an attempt starts the next waiting job itself,
    so prefetched jobs keep running while the producer's thread waits on a
    statement. Starting a job registers its attempt in `RunningAttempts`
    under the same lock that `drop` takes: a cancellation that drops the
    waiting jobs first and then cancels the running attempts reaches every
    job, whichever thread started it.

    Once closed, no job starts from here any more: a stopping producer
    closes it and returns the jobs left to the queue.
    """

    def __init__(self, attempts: RunningAttempts) -> None:
        self._attempts = attempts
        self._lock = threading.Lock()
        self._jobs: deque[Job] = deque()
        self._closed = False

    def extend(self, jobs: Iterable[Job]) -> None:
        with self._lock:
            self._jobs.extend(jobs)

    def start_next(self) -> tuple[Job, threading.Event] | None:
        """Take the oldest waiting job and register its attempt, or return None if none waits."""
        with self._lock:
            if self._closed or not self._jobs:
                return None
            job = self._jobs.popleft()
            cancellation = threading.Event()
            self._attempts.add(job, cancellation)
            return job, cancellation

    def put_back(self, job: Job) -> None:
        """Undo `start_next` for a job whose attempt never began."""
        with self._lock:
            self._attempts.remove(job)
            self._jobs.appendleft(job)

    def drop(self, job_ids: set[int]) -> None:
        """Remove the waiting jobs with these ids, so they never start."""
        with self._lock:
            self._jobs = deque(job for job in self._jobs if job.id not in job_ids)

    def take_all(self, *, close: bool = False) -> list[Job]:
        """Remove and return every waiting job. With `close`, no job starts from here again."""
        with self._lock:
            jobs = list(self._jobs)
            self._jobs.clear()
            self._closed = self._closed or close
            return jobs

    def job_ids(self) -> list[int]:
        with self._lock:
            return [job.id for job in self._jobs if job.id is not None]

    def __len__(self) -> int:
        return len(self._jobs)
