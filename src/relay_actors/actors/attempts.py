"""The attempts of a node that run, or whose outcome is not written yet."""

from __future__ import annotations

import threading
import time

from relay_actors.job import Job


class RunningAttempts:
    """The attempts that one queue's executors run, with their cancellation flags.

    The instance keeps one per queue for as long as it runs, so it outlives a
    producer that the supervisor restarts. Executors of the old producer go on
    running their attempts, so a cancellation must still reach them, and a stop
    must still wait for them. Producers add an attempt when they start it, and
    the executor removes it once it has handed on the attempt's outcome.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._running: dict[tuple[int, int], tuple[Job, threading.Event]] = {}

    def add(self, job: Job, cancellation: threading.Event) -> None:
        if job.id is not None:
            with self._changed:
                self._running[(job.id, job.attempt)] = (job, cancellation)

    def remove(self, job: Job) -> None:
        if job.id is not None:
            with self._changed:
                self._running.pop((job.id, job.attempt), None)
                if not self._running:
                    self._changed.notify_all()

    def cancel(self, job_id: int) -> bool:
        """Set the cancellation flag of every running attempt of `job_id`; return True if any."""
        with self._changed:
            flags = [
                flag for (running_id, _), (_, flag) in self._running.items() if running_id == job_id
            ]
        for flag in flags:
            flag.set()
        return bool(flags)

    def job_ids(self) -> list[int]:
        """Return the ids of the jobs with a running attempt."""
        with self._changed:
            return [job_id for job_id, _ in self._running]

    def jobs(self) -> list[Job]:
        """Return the jobs of the running attempts."""
        with self._changed:
            return [job for job, _ in self._running.values()]

    def wait_until_empty(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds until no attempt runs; return True if none does."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._running:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def __len__(self) -> int:
        with self._changed:
            return len(self._running)


class UnrecordedOutcomes:
    """The attempts of one node whose outcome exists but is not written to its row yet.

    An executor adds its attempt's outcome before it hands it on. The producer
    or the acker discards outcomes once their statement has run, and the acker
    also once it gives up on one. An executor or producer that finds the acker
    stopped discards the outcome it could not hand over. `testing.drain_queue`
    adds the jobs it claimed, and discards those it did not run. A producer's
    audit leaves the jobs listed here alone, however long their write takes:
    running such a job again would not get its outcome written sooner.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._attempts: set[tuple[int, int]] = set()

    def add(self, job_id: int, attempt: int) -> None:
        with self._lock:
            self._attempts.add((job_id, attempt))

    def discard(self, attempts: list[tuple[int, int]]) -> None:
        with self._lock:
            self._attempts.difference_update(attempts)

    def job_ids(self) -> list[int]:
        """Return the ids of the jobs with an unwritten outcome."""
        with self._lock:
            return [job_id for job_id, _ in self._attempts]

    def __len__(self) -> int:
        with self._lock:
            return len(self._attempts)
