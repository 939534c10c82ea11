"""`ReadyJobs`: claimed jobs waiting for an executor, started by the producer or an executor."""

from __future__ import annotations

import threading

from relay_actors.actors.attempts import RunningAttempts
from relay_actors.actors.ready import ReadyJobs
from relay_actors.job import Job


def claimed(job_id: int) -> Job:
    return Job(worker="tests.workers.Echo", args={}, queue="quick", id=job_id, attempt=1)


def waiting(*job_ids: int) -> tuple[RunningAttempts, ReadyJobs]:
    """Return attempts and ready jobs holding the claimed jobs `job_ids`, none started."""
    attempts = RunningAttempts()
    ready = ReadyJobs(attempts)
    ready.extend(claimed(job_id) for job_id in job_ids)
    return attempts, ready


def test_start_next_registers_oldest() -> None:
    attempts, ready = waiting(1, 2)

    started = ready.start_next()

    assert started is not None
    job, cancellation = started
    assert job.id == 1
    assert attempts.job_ids() == [1]
    assert ready.job_ids() == [2]
    assert attempts.cancel(1)
    assert cancellation.is_set()


def test_start_next_on_empty_returns_none() -> None:
    attempts = RunningAttempts()
    assert ReadyJobs(attempts).start_next() is None
    assert len(attempts) == 0


def test_dropped_job_never_starts() -> None:
    _, ready = waiting(1, 2, 3)

    ready.drop({1, 3})

    assert ready.job_ids() == [2]
    started = ready.start_next()
    assert started is not None
    assert started[0].id == 2
    assert ready.start_next() is None


def test_put_back_undoes_start_next() -> None:
    attempts, ready = waiting(1, 2)
    started = ready.start_next()
    assert started is not None

    ready.put_back(started[0])

    assert ready.job_ids() == [1, 2]
    assert len(attempts) == 0


def test_closed_jobs_start_no_more() -> None:
    attempts, ready = waiting(1, 2)

    returned = ready.take_all(close=True)
    ready.extend([claimed(3)])

    assert [job.id for job in returned] == [1, 2]
    assert ready.start_next() is None
    assert len(attempts) == 0


def test_take_all_keeps_it_open() -> None:
    _, ready = waiting(1)
    assert [job.id for job in ready.take_all()] == [1]
    ready.extend([claimed(2)])
    started = ready.start_next()
    assert started is not None
    assert started[0].id == 2


def test_cancel_reaches_every_started_job() -> None:
    """Drop, then cancel attempts: every job is either dropped or has its flag set.

    Executor threads start jobs while the producer's thread cancels them all,
    in the order the producer uses. No job may start with its flag unset.
    """
    jobs = 2000
    attempts, ready = waiting(*range(1, jobs + 1))
    started: list[tuple[Job, threading.Event]] = []
    go = threading.Barrier(5)

    def execute() -> None:
        go.wait()
        while (next_job := ready.start_next()) is not None:
            started.append(next_job)

    executors = [threading.Thread(target=execute) for _ in range(4)]
    for executor in executors:
        executor.start()
    go.wait()
    every_id = set(range(1, jobs + 1))
    ready.drop(every_id)
    for job_id in every_id:
        attempts.cancel(job_id)
    for executor in executors:
        executor.join(timeout=10)

    assert not any(executor.is_alive() for executor in executors)
    assert ready.start_next() is None
    assert all(cancellation.is_set() for _, cancellation in started)
