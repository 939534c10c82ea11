"""Starting an instance's actors, and the ticker thread that ticks and supervises them.

`Instance.start_actors` is the only caller, and these functions read and set its private state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pykka
from psycopg.types.json import Jsonb

from relay_actors.actors.acker import AckerActor
from relay_actors.actors.attempts import RunningAttempts
from relay_actors.actors.lifeline import LifelineActor
from relay_actors.actors.listener import ListenerActor
from relay_actors.actors.messages import Tick
from relay_actors.actors.poller import ResultPollerActor
from relay_actors.actors.producer import ProducerActor
from relay_actors.actors.pruner import PrunerActor
from relay_actors.actors.stager import StagerActor
from relay_actors.errors import RelayError
from relay_actors.store.connect import connect, is_pooled, warn_without_statement_timeout
from relay_actors.store.migrations import migrate
from relay_actors.worker import registered_worker_names

if TYPE_CHECKING:
    from relay_actors.instance import Instance

logger = logging.getLogger("relay_actors.instance")

START_TIMEOUT_SECONDS = 10.0
TICK_SECONDS = 0.1
SUPERVISE_EVERY_TICKS = 10


def start_actors(instance: Instance) -> None:
    """Migrate the schema, register the node, then start every actor and the ticker."""
    with connect(instance.dsn, "migrator", instance.node_id) as conn:
        migrate(conn, instance.prefix)
        if is_pooled(instance.dsn):
            warn_without_statement_timeout(conn, instance.node_id)
        conn.execute(
            instance.statements.upsert_node,
            {
                "node_id": instance.node_id,
                "name": instance.node,
                "queues": Jsonb(instance.queues),
                "workers": registered_worker_names(),
            },
        )
    instance._registered = True

    options = instance.options
    common = {"dsn": instance.dsn, "prefix": instance.prefix, "node_id": instance.node_id}
    start = instance._supervisor.start_child

    acker = start(
        "acker",
        lambda: AckerActor.start(
            insert_channel=instance.insert_channel,
            secret=options.secret,
            unrecorded=instance.unrecorded,
            **common,
        ),
    )
    for queue, size in instance.queues.items():
        start(
            f"producer {queue}",
            _producer_factory(instance, queue, size, acker, common),
            on_start=_producer_registrar(instance, queue),
        )

    poller = start(
        "poller",
        lambda: ResultPollerActor.start(
            directory=instance.directory,
            pending_ttl=options.pending_ttl,
            interval=options.safety_net_interval,
            **common,
        ),
    )
    start(
        "lifeline",
        lambda: LifelineActor.start(
            name=instance.node,
            queues=instance.queues,
            rescue_after=options.rescue_after,
            acker=acker,
            statistics=instance._heartbeat_statistics,
            interval=options.heartbeat_interval,
            **common,
        ),
    )

    if instance.queues:
        start(
            "stager",
            lambda: StagerActor.start(
                insert_channel=instance.insert_channel, interval=options.poll_interval, **common
            ),
        )
        start(
            "pruner",
            lambda: PrunerActor.start(
                max_age=options.prune_after, interval=options.prune_interval, **common
            ),
        )

    listener = start(
        "listener",
        lambda: ListenerActor.start(
            dsn=options.listen_dsn or instance.dsn,
            node_id=instance.node_id,
            insert_channel=instance.insert_channel if options.queues else None,
            relay_channel=instance.relay_channel,
            control_channel=instance.control_channel,
            directory=instance.directory,
            producers=instance._producers,
            poller=poller,
            secret=options.secret,
        ),
    )
    assert listener.ref is not None
    statistics = listener.ref.proxy().statistics().get(timeout=START_TIMEOUT_SECONDS)
    if not statistics["connected"]:
        raise RelayError(
            f"instance {instance.name!r}: the listener could not connect to PostgreSQL"
        )

    instance._ticker = threading.Thread(
        target=_tick_loop,
        args=(instance,),
        name=f"relay_actors-ticker-{instance.name}",
        daemon=True,
    )
    instance._ticker.start()
    logger.info(
        "instance %s started as node %s on schema %s with queues %s%s",
        instance.name,
        instance.node_id,
        instance.prefix,
        instance.queues or "{}",
        _relaxed_commits_note(instance),
        extra={"action": "instance_start", "node": instance.node_id},
    )


def _relaxed_commits_note(instance: Instance) -> str:
    """Return the log line's note on which producer commits skip the WAL flush, if any."""
    if not instance.queues:
        return ""
    if instance.options.relaxed_outcomes:
        return "; claims and outcomes commit without waiting for the WAL flush"
    if instance.options.relaxed_claims:
        return "; claims commit without waiting for the WAL flush"
    return ""


def _producer_factory(
    instance: Instance, queue: str, size: int, acker: Any, common: dict[str, Any]
) -> Callable[[], pykka.ActorRef[Any]]:
    # One for every producer this queue gets, so that after a restart
    # cancellations still reach the attempts of the old producer's
    # executors, and stop() still waits for them.
    attempts = RunningAttempts()
    instance._attempts[queue] = attempts

    def factory() -> pykka.ActorRef[Any]:
        return ProducerActor.start(
            queue=queue,
            executors=size,
            acker=acker,
            poll_interval=instance.options.poll_interval,
            audit_interval=instance.options.rescue_after,
            relaxed_claims=instance.options.relaxed_claims,
            relaxed_outcomes=instance.options.relaxed_outcomes,
            secret=instance.options.secret,
            attempts=attempts,
            unrecorded=instance.unrecorded,
            **common,
        )

    return factory


def _producer_registrar(instance: Instance, queue: str) -> Callable[[pykka.ActorRef[Any]], None]:
    """Return a callback that makes the listener wake the queue's current producer."""

    def register(producer: pykka.ActorRef[Any]) -> None:
        instance._producers[queue] = producer

    return register


def _tick_loop(instance: Instance) -> None:
    ticks = 0
    while not instance._ticker_done.wait(TICK_SECONDS):
        if instance._stopping.is_set():
            # Running jobs may take the whole shutdown grace period. The
            # heartbeat goes on, or other nodes would rescue those jobs and
            # run them a second time. Nothing else ticks, and no crashed
            # actor is restarted, so no new job is claimed.
            if "lifeline" in instance._supervisor.names():
                instance._supervisor.slot("lifeline").tell(Tick())
            continue
        ticks += 1
        if ticks % SUPERVISE_EVERY_TICKS == 0:
            instance._supervisor.check()
        for name in instance._supervisor.names():
            if name != "listener":
                instance._supervisor.slot(name).tell(Tick())
