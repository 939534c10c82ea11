"""ExecutorActor: runs one attempt at a time and turns its return into an outcome."""

from __future__ import annotations

import logging
import time
import traceback
from typing import Any

import pykka

from relay_actors import codec
from relay_actors.actors.messages import AttemptOutcome, Execute, ExecutorIdle, Record, RelayTarget
from relay_actors.backoff import default_backoff
from relay_actors.job import Job
from relay_actors.markers import Cancel, Discard, Snooze
from relay_actors.names import relay_channel
from relay_actors.results import JobError, Reason
from relay_actors.wire import STATUS_ERROR, STATUS_OK
from relay_actors.worker import lookup_worker

logger = logging.getLogger("relay_actors.executor")

DEFAULT_MAX_RESULT_BYTES = 8192
MAX_TRACEBACK_CHARS = 16_000


class UnknownWorker(Exception):
    """The executing node has no registered worker of the job's name."""


class ExecutorActor(pykka.ThreadingActor):
    """Runs jobs on its own thread, one at a time, and reports each outcome.

    The thread is a daemon: CPython cannot kill a thread, so a job that never
    returns must not keep the process alive after its instance stopped.
    """

    use_daemon_thread = True

    def __init__(
        self, producer: pykka.ActorRef[Any], acker: pykka.ActorRef[Any], prefix: str, node_id: str
    ) -> None:
        super().__init__()
        self._producer = producer
        self._acker = acker
        self._prefix = prefix
        self._node_id = node_id

    def on_receive(self, message: Any) -> Any:
        if not isinstance(message, Execute):
            logger.warning("executor dropped an unknown message %r", type(message))
            return None
        outcome = run_attempt(message.job, self._prefix, self._node_id)
        try:
            self._acker.tell(Record(outcome))
        except pykka.ActorDeadError:
            logger.error(
                "outcome of job %s lost: the acker stopped; the job stays executing until rescued",
                message.job.id,
                extra={"action": "record_failed", "job_id": message.job.id},
            )
        try:
            self._producer.tell(ExecutorIdle(self.actor_ref))
        except pykka.ActorDeadError:
            pass
        return None


def run_attempt(job: Job, prefix: str, node_id: str) -> AttemptOutcome:
    """Run `perform` for one attempt of `job` and return its outcome; never raises."""
    relay = _relay_target(job, prefix)
    started = time.monotonic()
    try:
        worker_class = lookup_worker(job.worker)
        if worker_class is None:
            raise UnknownWorker(
                f"worker {job.worker!r} is not registered on node {node_id}; import its module "
                f"on every node that runs queue {job.queue!r}"
            )
        value = worker_class().perform(job)
    except BaseException as error:  # noqa: BLE001 - a job must never stop its node
        logger.info(
            "job %s attempt %s failed on queue %s: %s",
            job.id,
            job.attempt,
            job.queue,
            type(error).__qualname__,
            extra={"action": "job_failed", "job_id": job.id, "queue": job.queue},
        )
        return _failure(job, error, relay, node_id)
    logger.debug(
        "job %s attempt %s finished in %.1f ms",
        job.id,
        job.attempt,
        (time.monotonic() - started) * 1000,
        extra={"action": "job_finished", "job_id": job.id},
    )
    return _from_return(job, value, relay, node_id)


def _relay_target(job: Job, prefix: str) -> RelayTarget | None:
    relay = job.meta.get("relay")
    if not isinstance(relay, dict):
        return None
    node, mailbox, ref = relay.get("node"), relay.get("mailbox"), relay.get("ref")
    if not (isinstance(node, str) and isinstance(mailbox, str) and isinstance(ref, str)):
        logger.warning(
            "job %s has malformed relay meta; its result is not announced",
            job.id,
            extra={"action": "bad_relay_meta", "job_id": job.id},
        )
        return None
    return RelayTarget(relay_channel(prefix, node), mailbox, ref, relay.get("inline") is not False)


def _max_result_bytes(job: Job) -> int:
    relay = job.meta.get("relay")
    limit = relay.get("max_bytes") if isinstance(relay, dict) else None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    return DEFAULT_MAX_RESULT_BYTES


def _job_error(job: Job, type_name: str, message: str, trace: str, node_id: str) -> JobError:
    return JobError(type_name, message, trace[-MAX_TRACEBACK_CHARS:], job.attempt, node_id)


def _failure(
    job: Job, error: BaseException, relay: RelayTarget | None, node_id: str
) -> AttemptOutcome:
    kind = type(error)
    trace = "".join(traceback.format_exception(error))
    job_error = _job_error(
        job, f"{kind.__module__}.{kind.__qualname__}", str(error), trace, node_id
    )
    final = job.attempt >= job.max_attempts
    delay = 0.0
    if not final:
        delay = _backoff(job)
    entry = {
        "attempt": job.attempt,
        "at": time.time(),
        "type": job_error.type,
        "message": job_error.message,
        "traceback": job_error.traceback,
        "node": node_id,
    }
    return AttemptOutcome(
        job_id=_id(job),
        attempt=job.attempt,
        state="discarded" if final else "retryable",
        status=STATUS_ERROR,
        result=codec.encode(job_error.to_wire()) if relay else None,
        delay=delay,
        error=entry,
        relay=relay,
    )


def _backoff(job: Job) -> float:
    worker_class = lookup_worker(job.worker)
    if worker_class is None:
        return default_backoff(job.attempt)
    try:
        delay = float(worker_class().backoff(job))
    except Exception:
        logger.exception("backoff of worker %s raised; using the default", job.worker)
        return default_backoff(job.attempt)
    return delay if delay >= 0 else 0.0


def _from_return(job: Job, value: Any, relay: RelayTarget | None, node_id: str) -> AttemptOutcome:
    job_id = _id(job)
    if isinstance(value, Snooze):
        snoozed = job.meta.get("snoozed", 0)
        count = snoozed + 1 if isinstance(snoozed, int) else 1
        return AttemptOutcome(
            job_id,
            job.attempt,
            "scheduled",
            Reason.SNOOZED.value,
            delay=value.seconds,
            extra_attempts=1,
            meta_patch={"snoozed": count},
            relay=relay,
        )
    if isinstance(value, Cancel):
        return AttemptOutcome(
            job_id,
            job.attempt,
            "cancelled",
            Reason.CANCELLED.value,
            meta_patch={"cancel_reason": value.reason},
            relay=relay,
        )
    if isinstance(value, Discard):
        return AttemptOutcome(
            job_id,
            job.attempt,
            "discarded",
            Reason.DISCARDED.value,
            meta_patch={"discard_reason": value.reason},
            relay=relay,
        )
    if relay is None:
        return AttemptOutcome(job_id, job.attempt, "completed", STATUS_OK)
    try:
        encoded = codec.encode(value)
    except codec.EncodeError as error:
        # The work is done, so the job completes instead of retrying.
        job_error = _job_error(job, "relay_actors.codec.EncodeError", str(error), "", node_id)
        return AttemptOutcome(
            job_id,
            job.attempt,
            "completed",
            STATUS_ERROR,
            result=codec.encode(job_error.to_wire()),
            relay=relay,
        )
    if len(encoded) > _max_result_bytes(job):
        return AttemptOutcome(
            job_id, job.attempt, "completed", Reason.RESULT_TOO_LARGE.value, relay=relay
        )
    return AttemptOutcome(job_id, job.attempt, "completed", STATUS_OK, result=encoded, relay=relay)


def _id(job: Job) -> int:
    if job.id is None:
        raise ValueError("cannot record the outcome of a job that was never inserted")
    return job.id
