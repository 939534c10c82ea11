"""ExecutorActor: runs one attempt at a time and reports its outcome."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pykka

from relay_actors.actors.acker import send_outcome
from relay_actors.actors.attempts import RunningAttempts, UnrecordedOutcomes
from relay_actors.actors.messages import AttemptOutcome, Execute, ExecutorIdle
from relay_actors.actors.outcomes import failed_attempt, from_exception, from_return
from relay_actors.actors.ready import ReadyJobs
from relay_actors.actors.slot import ActorSlot
from relay_actors.backoff import default_backoff
from relay_actors.failures import JobTimeout, UnknownWorker
from relay_actors.job import Job
from relay_actors.telemetry import JOB_EXCEPTION, JOB_START, JOB_STOP, Event, enabled, execute
from relay_actors.worker import lookup_worker

logger = logging.getLogger("relay_actors.executor")


class ExecutorActor(pykka.ThreadingActor):
    """Runs jobs one at a time and sends each outcome to its producer.

    After each attempt it starts the next job waiting in its producer's
    `ReadyJobs`, if any, before it counts itself idle: prefetched jobs run
    without waiting for the producer's thread, which may be busy with a
    statement.

    A job runs on this actor's thread, or on a thread of its own when its
    worker sets a timeout. The threads are daemons: CPython cannot kill a
    thread, so a job that never returns must not keep the process alive after
    its instance stopped.
    """

    use_daemon_thread = True

    def __init__(
        self,
        producer: pykka.ActorRef[Any],
        acker: ActorSlot,
        prefix: str,
        node_id: str,
        attempts: RunningAttempts,
        unrecorded: UnrecordedOutcomes,
        ready: ReadyJobs,
    ) -> None:
        super().__init__()
        self._producer = producer
        self._ready = ready
        self._attempts = attempts
        self._unrecorded = unrecorded
        self._acker = acker
        self._prefix = prefix
        self._node_id = node_id

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Execute):
            logger.warning(
                "executor dropped an unknown message %r",
                type(message),
                extra={"action": "unknown_message"},
            )
            return None
        job, cancellation = message.job, message.cancellation
        while True:
            started = time.monotonic()
            outcome = run_attempt(job, cancellation, self._prefix, self._node_id)
            seconds = time.monotonic() - started
            self._unrecorded.add(outcome.job_id, outcome.attempt)
            following = self._ready.start_next()
            try:
                self._hand_on(ExecutorIdle(self.actor_ref, outcome, seconds, following is not None))
            except BaseException:
                if following is not None:
                    self._ready.put_back(following[0])
                raise
            finally:
                # Only now, so that a stopping instance that waits for its running
                # attempts finds this outcome queued for the acker.
                self._attempts.remove(job)
            if following is None:
                return None
            job, cancellation = following

    def _hand_on(self, idle: ExecutorIdle) -> None:
        """Send the outcome to the producer, or to the acker if the producer stopped."""
        outcome = idle.outcome
        try:
            self._producer.tell(idle)
        except pykka.ActorDeadError:
            pass
        else:
            # pykka marks an actor stopped before its on_stop or on_failure
            # takes the queued outcomes. If the producer is still alive, it
            # handles this one. Else the message may have arrived too late
            # and been dropped, so the acker records it too. A second
            # record of the same attempt changes nothing.
            if self._producer.is_alive():
                return
        # The producer stopped (the node is stopping or it crashed), so the
        # acker records the outcome.
        send_outcome(self._acker, outcome, self._unrecorded, "executor")


def run_attempt(
    job: Job, cancellation: threading.Event, prefix: str, node_id: str
) -> AttemptOutcome:
    """Run `perform` for one attempt of `job` and return its outcome; never raises.

    Emits the job start event first, and then either the stop event, or the
    exception event when `perform` raised or its return value was invalid.
    """
    started = time.monotonic()
    if enabled(JOB_START):
        execute(
            JOB_START,
            {"system_time": time.time(), "queue_wait": _queue_wait(job)},
            _job_metadata(job, node_id),
        )
    try:
        value = _perform(job, cancellation, node_id)
    except BaseException as error:  # noqa: BLE001 - a job must never stop its node
        logger.info(
            "job %s attempt %s failed on queue %s: %s",
            job.id,
            job.attempt,
            job.queue,
            type(error).__qualname__,
            extra={"action": "job_failed", "job_id": job.id, "queue": job.queue},
        )
        outcome = _outcome_of_failure(job, error, prefix, node_id)
        if enabled(JOB_EXCEPTION):
            _emit_job_end(JOB_EXCEPTION, job, node_id, started, outcome, error)
        return outcome
    logger.debug(
        "job %s attempt %s finished in %.1f ms",
        job.id,
        job.attempt,
        (time.monotonic() - started) * 1000,
        extra={"action": "job_finished", "job_id": job.id},
    )
    try:
        outcome = from_return(job, value, prefix, node_id)
    except Exception as error:  # noqa: BLE001 - e.g. a marker whose reason is not JSON
        outcome = _outcome_of_failure(job, error, prefix, node_id)
        if enabled(JOB_EXCEPTION):
            _emit_job_end(JOB_EXCEPTION, job, node_id, started, outcome, error)
        return outcome
    if enabled(JOB_STOP):
        _emit_job_end(JOB_STOP, job, node_id, started, outcome, None)
    return outcome


def _queue_wait(job: Job) -> float | None:
    """Return the seconds from when the job was due to its claim, on the database's clock."""
    if job.attempted_at is None or job.scheduled_at is None:
        return None
    # Both times come from now(), which PostgreSQL fixes when a transaction
    # starts, not when its snapshot is taken. A claim that started just before
    # the insert, yet saw its row, records an attempted_at a few milliseconds
    # before scheduled_at, so the wait is clamped at zero.
    return max(0.0, (job.attempted_at - job.scheduled_at).total_seconds())


def _job_metadata(job: Job, node_id: str) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "queue": job.queue,
        "worker": job.worker,
        "attempt": job.attempt,
        "max_attempts": job.max_attempts,
        "node": node_id,
    }


def _emit_job_end(
    event: Event,
    job: Job,
    node_id: str,
    started: float,
    outcome: AttemptOutcome,
    error: BaseException | None,
) -> None:
    """Emit the stop or exception `event` of an attempt that ended with `outcome`."""
    measurements = {"duration": time.monotonic() - started, "queue_wait": _queue_wait(job)}
    metadata = _job_metadata(job, node_id)
    metadata["state"] = outcome.state
    if error is not None:
        kind = type(error)
        metadata["error_type"] = f"{kind.__module__}.{kind.__qualname__}"
        metadata["error"] = error
        metadata["retry"] = outcome.state == "retryable"
    execute(event, measurements, metadata)


def _outcome_of_failure(
    job: Job, error: BaseException, prefix: str, node_id: str
) -> AttemptOutcome:
    """Return the outcome of a failed attempt, even if the error cannot be described."""
    try:
        return from_exception(job, error, prefix, node_id)
    except Exception as second:
        logger.exception(
            "describing the failure of job %s failed",
            job.id,
            extra={"action": "describe_failed", "job_id": job.id},
        )
        return failed_attempt(
            job_id=job.id or 0,
            queue=job.queue,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            error_type=f"{type(error).__module__}.{type(error).__qualname__}",
            message=f"the error could not be described: {type(second).__qualname__}",
            trace="",
            node_id=node_id,
            relay=None,
            delay=default_backoff(job.attempt),
        )


def _perform(job: Job, cancellation: threading.Event, node_id: str) -> Any:
    worker_class = lookup_worker(job.worker)
    if worker_class is None:
        raise UnknownWorker(
            f"worker {job.worker!r} is not registered on node {node_id}; import its module "
            f"on every node that runs queue {job.queue!r}"
        )
    worker = worker_class()
    worker.cancellation = cancellation
    timeout = worker_class.timeout
    if timeout is None:
        return worker.perform(job)
    returned: list[Any] = []
    raised: list[BaseException] = []

    def target() -> None:
        try:
            returned.append(worker.perform(job))
        except BaseException as error:  # noqa: BLE001 - re-raised on the executor thread
            raised.append(error)

    runner = threading.Thread(target=target, name=f"relay_actors-job-{job.id}", daemon=True)
    runner.start()
    runner.join(timeout)
    if runner.is_alive():
        # The thread cannot be killed: it is left running with its cancellation
        # flag set, and whatever it returns later is dropped.
        cancellation.set()
        logger.warning(
            "job %s attempt %s exceeded its timeout of %.3f s; its thread is left running",
            job.id,
            job.attempt,
            timeout,
            extra={"action": "job_timeout", "job_id": job.id, "queue": job.queue},
        )
        raise JobTimeout(f"attempt {job.attempt} exceeded the worker's timeout of {timeout} s")
    if raised:
        raise raised[0]
    return returned[0]
