"""`RunningAttempts`: the cancellation flags of one queue's running attempts."""

from __future__ import annotations

import threading

from relay_actors.job import Job


class RunningAttempts:
    """Cancellation flags of the attempts that one queue's executors run, by job id.

    The instance keeps one per queue for as long as it runs, so the flags
    outlive a producer that the supervisor restarts. Executors of the old
    producer go on running their attempts, and a cancellation must still reach
    them. Producers add an attempt when they start it, and the executor
    removes it when the attempt ends.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flags: dict[tuple[int, int], threading.Event] = {}

    def add(self, job: Job, cancellation: threading.Event) -> None:
        if job.id is not None:
            with self._lock:
                self._flags[(job.id, job.attempt)] = cancellation

    def remove(self, job: Job) -> None:
        if job.id is not None:
            with self._lock:
                self._flags.pop((job.id, job.attempt), None)

    def cancel(self, job_id: int) -> bool:
        """Set the cancellation flag of every running attempt of `job_id`; return True if any."""
        with self._lock:
            flags = [flag for (running_id, _), flag in self._flags.items() if running_id == job_id]
        for flag in flags:
            flag.set()
        return bool(flags)

    def job_ids(self) -> list[int]:
        """Return the ids of the jobs with a running attempt."""
        with self._lock:
            return [job_id for job_id, _ in self._flags]

    def __len__(self) -> int:
        with self._lock:
            return len(self._flags)
