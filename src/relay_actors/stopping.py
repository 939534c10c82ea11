"""Stopping an instance: draining its running jobs, then stopping its actors and connections.

`Instance.stop` is the only caller, and these functions read and change its private state.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import pykka

from relay_actors.actors.lifeline import LOST_TYPE
from relay_actors.actors.messages import Drain, Record, Sync
from relay_actors.actors.outcomes import failed_attempt, relay_target
from relay_actors.job import Job

if TYPE_CHECKING:
    from relay_actors.instance import Instance

logger = logging.getLogger("relay_actors.instance")

FORGET_NODE_TIMEOUT_SECONDS = 2.0


def stop_instance(instance: Instance, grace: float | None) -> None:
    """Stop claiming jobs, wait up to `grace` seconds for running ones, then stop the actors.

    It then deletes the node's row and closes the pool. A `grace` of None means
    `options.shutdown_grace`. `Instance.stop` documents what callers see.
    """
    grace = instance.options.shutdown_grace if grace is None else grace
    deadline = time.monotonic() + grace
    instance._stopping.set()
    _drain_producers(instance, deadline)
    for queue in list(instance._producers):
        instance._supervisor.stop_child(f"producer {queue}")
    acker = instance._supervisor.ref("acker")
    if acker is not None:
        try:
            synced = acker.ask(Sync(), timeout=max(1.0, deadline - time.monotonic()))
            synced.get(timeout=max(1.0, deadline - time.monotonic()))
        except pykka.Timeout:
            logger.warning(
                "recording the last outcomes timed out at stop", extra={"action": "record_failed"}
            )
        except pykka.ActorDeadError as error:
            logger.warning(
                "recording the last outcomes failed at stop: %s",
                error,
                extra={"action": "record_failed"},
            )
    instance._ticker_done.set()
    if instance._ticker is not None:
        instance._ticker.join()
    for name in instance._supervisor.names():
        instance._supervisor.stop_child(name)
    for mailbox in instance.directory.mailboxes():
        mailbox.stop()
    _forget_node(instance)
    instance.pool.close()
    instance._on_stop(instance)
    if instance._ticker is None:
        # Its start failed, and the caller of start() gets that error.
        logger.info(
            "instance %s failed to start, so it closed the connections and actors it had opened",
            instance.name,
            extra={"action": "instance_stop"},
        )
        return
    logger.info("instance %s stopped", instance.name, extra={"action": "instance_stop"})


def _drain_producers(instance: Instance, deadline: float) -> None:
    drains = []
    for producer in instance._producers.values():
        try:
            drains.append((producer, producer.ask(Drain(), block=False)))
        except pykka.ActorDeadError:
            continue
    for _, drain in drains:
        try:
            drain.get(timeout=max(0.0, deadline - time.monotonic())).get(
                timeout=max(0.0, deadline - time.monotonic())
            )
        except (pykka.Timeout, pykka.ActorDeadError):
            continue
    # A producer drains only the attempts it started. Those of an earlier
    # producer of its queue, which the supervisor replaced, may run on.
    for attempts in instance._attempts.values():
        if not attempts.wait_until_empty(max(0.0, deadline - time.monotonic())):
            _release_running(instance, attempts.jobs())


def _release_running(instance: Instance, running: list[Job]) -> None:
    acker = instance._supervisor.slot("acker")
    for job in running:
        assert job.id is not None  # claimed jobs have ids
        logger.warning(
            "job %s of queue %s still running after the shutdown grace period; released "
            "as a failed attempt, its thread is left running",
            job.id,
            job.queue,
            extra={"action": "release", "job_id": job.id, "queue": job.queue},
        )
        acker.tell(
            Record(
                failed_attempt(
                    job_id=job.id,
                    queue=job.queue,
                    attempt=job.attempt,
                    max_attempts=job.max_attempts,
                    error_type=LOST_TYPE,
                    message=f"node {instance.node_id} stopped before attempt {job.attempt} ended",
                    trace="",
                    node_id=instance.node_id,
                    relay=relay_target(job.id, job.meta, instance.prefix),
                    delay=0.0,
                    retry_state="available",
                )
            )
        )


def _forget_node(instance: Instance) -> None:
    if not instance._registered:
        return
    try:
        with instance.pool.connection(FORGET_NODE_TIMEOUT_SECONDS) as conn:
            conn.execute(instance.statements.delete_node, {"node_id": instance.node_id})
    except Exception as error:  # noqa: BLE001 - a stale node row is harmless
        logger.warning(
            "could not remove node %s from the nodes table: %s",
            instance.node_id,
            error,
            extra={"action": "forget_node_failed", "node": instance.node_id},
        )
