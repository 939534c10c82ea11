"""Building an `AttemptOutcome` from what an attempt returned, raised or lost."""

from __future__ import annotations

import dataclasses
import logging
import time
import traceback
from typing import Any

from relay_actors import codec
from relay_actors.actors.messages import AttemptOutcome, RelayTarget
from relay_actors.backoff import bounded_delay, default_backoff
from relay_actors.job import Job
from relay_actors.markers import Cancel, Discard, Snooze
from relay_actors.names import relay_channel
from relay_actors.plugin import DEFAULT_MAX_RESULT_BYTES
from relay_actors.results import JobError, Reason
from relay_actors.wire import STATUS_ERROR, STATUS_OK
from relay_actors.worker import lookup_worker

logger = logging.getLogger("relay_actors.executor")

MAX_TRACEBACK_CHARS = 16_000


def relay_target(job_id: int | None, meta: dict[str, Any], prefix: str) -> RelayTarget | None:
    """Return where the job's result goes, or None for a job inserted without a relay."""
    relay = meta.get("relay") if isinstance(meta, dict) else None
    if not isinstance(relay, dict):
        return None
    node, mailbox, ref = relay.get("node"), relay.get("mailbox"), relay.get("ref")
    if not (isinstance(node, str) and isinstance(mailbox, str) and isinstance(ref, str)):
        logger.warning(
            "job %s has malformed relay meta; its result is not announced",
            job_id,
            extra={"action": "bad_relay_meta", "job_id": job_id},
        )
        return None
    return RelayTarget(
        relay_channel(prefix, node),
        mailbox,
        ref,
        inline=relay.get("inline") is not False,
        tracebacks=relay.get("tracebacks") is not False,
    )


def _max_result_bytes(job: Job) -> int:
    relay = job.meta.get("relay")
    limit = relay.get("max_bytes") if isinstance(relay, dict) else None
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return limit
    return DEFAULT_MAX_RESULT_BYTES


def _job_id(job: Job) -> int:
    if job.id is None:
        raise ValueError("cannot record the outcome of a job that was never inserted")
    return job.id


def failed_attempt(
    *,
    job_id: int,
    queue: str,
    attempt: int,
    max_attempts: int,
    error_type: str,
    message: str,
    trace: str,
    node_id: str,
    relay: RelayTarget | None,
    delay: float,
    retry_state: str = "retryable",
) -> AttemptOutcome:
    """Return the outcome of a failed attempt: retried after `delay` s, or discarded at the last.

    `retry_state` is "available" for an attempt lost with its node, which may
    run again at once.
    """
    job_error = JobError(error_type, message, trace[-MAX_TRACEBACK_CHARS:], attempt, node_id)
    final = attempt >= max_attempts
    entry = {
        "attempt": attempt,
        "at": time.time(),
        "type": job_error.type,
        "message": job_error.message,
        "traceback": job_error.traceback,
        "node": node_id,
    }
    return AttemptOutcome(
        job_id=job_id,
        attempt=attempt,
        state="discarded" if final else retry_state,
        status=STATUS_ERROR,
        queue=queue,
        result=_encoded_error(job_error, relay),
        delay=0.0 if final else delay,
        error=entry,
        relay=relay,
        node=node_id,
        max_attempts=max_attempts,
    )


def _encoded_error(job_error: JobError, relay: RelayTarget | None) -> bytes | None:
    """Return the JobError as the caller receives it, without its traceback if asked."""
    if relay is None:
        return None
    if not relay.tracebacks:
        job_error = dataclasses.replace(job_error, traceback="")
    return codec.encode(job_error.to_wire())


def from_exception(job: Job, error: BaseException, prefix: str, node_id: str) -> AttemptOutcome:
    """Return the outcome of an attempt that raised `error`."""
    kind = type(error)
    return failed_attempt(
        job_id=_job_id(job),
        queue=job.queue,
        attempt=job.attempt,
        max_attempts=job.max_attempts,
        error_type=f"{kind.__module__}.{kind.__qualname__}",
        message=str(error),
        trace="".join(traceback.format_exception(error)),
        node_id=node_id,
        relay=relay_target(job.id, job.meta, prefix),
        delay=_backoff(job),
    )


def _backoff(job: Job) -> float:
    worker_class = lookup_worker(job.worker)
    if worker_class is None:
        return default_backoff(job.attempt)
    try:
        delay = float(worker_class().backoff(job))
    except Exception:
        logger.exception(
            "backoff of worker %s raised; using the default",
            job.worker,
            extra={"action": "backoff_failed", "job_id": job.id},
        )
        return default_backoff(job.attempt)
    bounded = bounded_delay(delay)
    if bounded is None:
        logger.warning(
            "backoff of worker %s returned an invalid delay %r, so the default backoff is used",
            job.worker,
            delay,
            extra={"action": "backoff_failed", "job_id": job.id},
        )
        return default_backoff(job.attempt)
    return bounded


def from_return(job: Job, value: Any, prefix: str, node_id: str) -> AttemptOutcome:
    """Return the outcome of an attempt that returned `value`."""
    job_id = _job_id(job)
    relay = relay_target(job.id, job.meta, prefix)
    common: dict[str, Any] = {
        "job_id": job_id,
        "attempt": job.attempt,
        "queue": job.queue,
        "relay": relay,
        "node": node_id,
        "max_attempts": job.max_attempts,
    }
    if isinstance(value, Snooze):
        snoozed = job.meta.get("snoozed", 0)
        count = snoozed + 1 if isinstance(snoozed, int) else 1
        return AttemptOutcome(
            state="scheduled",
            status=Reason.SNOOZED.value,
            delay=float(value.seconds),
            extra_attempts=1,
            meta_patch={"snoozed": count},
            **common,
        )
    if isinstance(value, Cancel):
        return AttemptOutcome(
            state="cancelled",
            status=Reason.CANCELLED.value,
            meta_patch={"cancel_reason": value.reason},
            **common,
        )
    if isinstance(value, Discard):
        return AttemptOutcome(
            state="discarded",
            status=Reason.DISCARDED.value,
            meta_patch={"discard_reason": value.reason},
            **common,
        )
    if relay is None:
        return AttemptOutcome(state="completed", status=STATUS_OK, **common)
    try:
        encoded = codec.encode(value)
    except codec.EncodeError as error:
        # The work is done, so the job completes instead of retrying.
        job_error = JobError("relay_actors.codec.EncodeError", str(error), "", job.attempt, node_id)
        return AttemptOutcome(
            state="completed",
            status=STATUS_ERROR,
            result=codec.encode(job_error.to_wire()),
            **common,
        )
    if len(encoded) > _max_result_bytes(job):
        return AttemptOutcome(state="completed", status=Reason.RESULT_TOO_LARGE.value, **common)
    return AttemptOutcome(state="completed", status=STATUS_OK, result=encoded, **common)
