"""Helpers for users' own tests: run a queue's jobs in the calling thread.

`drain_queue` lets a test insert jobs with `Relay.async_` on an instance
started with `queues={}`, then run them to completion without a worker node::

    instance = relay_actors.start(dsn=..., queues={}, plugins=[Relay])
    relay = Relay.async_(Double.new({"int": 2}))
    assert relay_actors.testing.drain_queue("math") == {"completed": 1}
    assert Relay.await_(relay) == Ok(4)

Tests that need no database at all start the instance in inline mode
instead: `relay_actors.start(testing="inline", plugins=[Relay])`. Each
`Relay.async_` then runs its job at once on the calling thread, and
`Relay.await_` returns the result without waiting (see `relay_actors.inline`).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import pykka

from relay_actors.actors.executor import run_attempt
from relay_actors.actors.messages import Record, Sync
from relay_actors.actors.queue_rows import job_from_row
from relay_actors.errors import ConfigurationError, RelayError
from relay_actors.instances import DEFAULT_NAME, get_instance

CLAIM_BATCH = 100
RECORD_TIMEOUT_SECONDS = 30.0


def drain_queue(queue: str, *, instance: str = DEFAULT_NAME) -> dict[str, int]:
    """Run every available job of `queue` to an outcome in this thread; return counts by state.

    Jobs run one at a time, as on an executor, and their outcomes are recorded
    and announced as a node would. Jobs that become available while the queue
    drains (for example a retry with no delay) run too. Scheduled jobs, and
    retries whose time has not come, are not run. The counts map each job's
    new state (completed, retryable, scheduled, discarded, cancelled,
    available) to how many jobs reached it.

    Raises:
        InstanceNotFoundError: no running instance is called `instance`.
        ConfigurationError: the instance runs in inline testing mode.
        RelayError: the outcomes were not recorded within 30 s.
    """
    node = get_instance(instance)
    node.check_usable(relay=False)
    if node.inline:
        raise ConfigurationError(
            f"instance {instance!r} runs in inline testing mode, which runs each job when it "
            "is inserted, so there is no queue to drain; remove the drain_queue call"
        )
    acker = node.acker
    counts: Counter[str] = Counter()
    while True:
        with node.pool.connection() as conn:
            rows = conn.execute(
                node.statements.claim,
                {"node": node.node_id, "queue": queue, "limit": CLAIM_BATCH},
            ).fetchall()
        if not rows:
            break
        jobs = [job_from_row(row) for row in rows]
        # Listed as unwritten outcomes, so the node's producer does not adopt
        # them as jobs that no executor runs. The acker discards each one it writes.
        claimed = [(job.id, job.attempt) for job in jobs if job.id is not None]
        for job_id, attempt in claimed:
            node.unrecorded.add(job_id, attempt)
        try:
            for job in jobs:
                outcome = run_attempt(job, threading.Event(), node.prefix, node.node_id)
                counts[outcome.state] += 1
                if not acker.tell(Record(outcome)):
                    raise RelayError(f"instance {instance!r} has no acker: it is stopping")
                claimed.remove((outcome.job_id, outcome.attempt))
        finally:
            # Jobs left unrun by an error are unlisted, so that this node's
            # producer of the queue adopts them. Without one, another node
            # rescues them once this node stops.
            node.unrecorded.discard(claimed)
        _wait_for_acker(node.acker.ref, instance)
    return dict(counts)


def _wait_for_acker(acker: pykka.ActorRef[Any] | None, instance: str) -> None:
    if acker is None:
        raise RelayError(f"instance {instance!r} has no acker: it is stopping")
    try:
        synced = acker.ask(Sync(), timeout=RECORD_TIMEOUT_SECONDS)
        synced.get(timeout=RECORD_TIMEOUT_SECONDS)
    except pykka.Timeout:
        raise RelayError(
            f"outcomes of the drained jobs were not recorded within {RECORD_TIMEOUT_SECONDS} s; "
            "check that the database is reachable"
        ) from None
    except pykka.ActorDeadError as error:
        raise RelayError(
            f"outcomes of the drained jobs were not recorded: {error}; check that the database "
            "is reachable and the instance is not stopping"
        ) from None
