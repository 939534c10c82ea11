"""Cancelling a job that has not finished, and telling its caller and its node."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from relay_actors.actors.outcomes import relay_target
from relay_actors.results import Reason
from relay_actors.wire import Delivery, Entry, control_payload, pack_payloads

if TYPE_CHECKING:
    from relay_actors.instance import Instance

logger = logging.getLogger("relay_actors.instance")


def cancel_job(instance: Instance, job_id: int, reason: str) -> bool:
    """Cancel `job_id` in one transaction that also notifies its caller and nodes.

    Returns False when the job is unknown or had already finished.
    """
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise TypeError(f"job_id must be an int, got {job_id!r}")
    if not isinstance(reason, str):
        raise TypeError(f"reason must be a str, got {reason!r}")
    statements = instance.statements
    with instance.pool.connection() as conn, conn.transaction():
        row: tuple[Any, ...] | None = conn.execute(
            statements.cancel, {"id": job_id, "reason": reason}
        ).fetchone()
        if row is None:
            return False
        old_state, meta, attempt, queue, attempted_by = row
        channels: list[str] = []
        payloads: list[str] = []
        relay = relay_target(job_id, meta, instance.prefix)
        if relay is not None:
            delivery = Delivery(job_id, Reason.CANCELLED.value, attempt, True)
            entries = [(Entry(relay.mailbox, relay.ref, delivery), True)]
            for payload in pack_payloads(entries, instance.options.secret):
                channels.append(relay.channel)
                payloads.append(payload)
        if old_state == "executing":
            channels.append(instance.control_channel)
            payloads.append(control_payload(job_id, instance.options.secret))
        if channels:
            conn.execute(statements.notify_many, {"channel": channels, "payload": payloads})
    logger.info(
        "cancelled job %s of queue %s (was %s%s)",
        job_id,
        queue,
        old_state,
        f" on node {attempted_by}" if old_state == "executing" else "",
        extra={"action": "cancel", "job_id": job_id, "queue": queue},
    )
    return True
