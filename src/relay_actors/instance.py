"""`Instance`: one running node of relay_actors, its actors and connections."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar

import pykka
from psycopg.types.json import Jsonb

from relay_actors.actors.acker import AckerActor
from relay_actors.actors.attempts import RunningAttempts, UnrecordedOutcomes
from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.lifeline import LOST_TYPE, LifelineActor
from relay_actors.actors.listener import ListenerActor
from relay_actors.actors.mailbox import RelayRefActor
from relay_actors.actors.messages import Drain, Record, Sync, Tick
from relay_actors.actors.outcomes import failed_attempt, relay_target
from relay_actors.actors.poller import ResultPollerActor
from relay_actors.actors.producer import ProducerActor
from relay_actors.actors.pruner import PrunerActor
from relay_actors.actors.slot import ActorSlot
from relay_actors.actors.stager import StagerActor
from relay_actors.cancelling import cancel_job
from relay_actors.errors import (
    ConfigurationError,
    InstanceForkedError,
    InstanceNotFoundError,
    RelayError,
)
from relay_actors.inserting import InsertCombiner
from relay_actors.job import Job
from relay_actors.names import control_channel, insert_channel, make_node_id, relay_channel
from relay_actors.options import Options
from relay_actors.store.connect import (
    ConnectionPool,
    connect,
    is_pooled,
    warn_without_statement_timeout,
)
from relay_actors.store.migrations import migrate
from relay_actors.store.statements import Statements, statements_for
from relay_actors.supervision import Supervisor
from relay_actors.wire import Delivery, delivery_from_row
from relay_actors.worker import registered_worker_names

logger = logging.getLogger("relay_actors.instance")

START_TIMEOUT_SECONDS = 10.0
FORGET_NODE_TIMEOUT_SECONDS = 2.0
TICK_SECONDS = 0.1
SUPERVISE_EVERY_TICKS = 10
# How long a heartbeat waits for the actors' figures.
HEARTBEAT_ASK_SECONDS = 1.0


class Instance:
    """A started node: its actors, connections and options. Made by `start()`.

    Use it as a context manager, or call `stop()`, to stop it.
    """

    # True for an instance that runs jobs on the inserting thread, without a
    # database (start(testing="inline")).
    inline: ClassVar[bool] = False

    def __init__(
        self,
        *,
        name: str,
        dsn: str,
        prefix: str,
        node: str,
        options: Options,
        on_stop: Callable[[Instance], None],
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.prefix = prefix
        self.node = node
        self.options = options
        self.queues = dict(options.queues)
        self.relay_plugin = options.plugin
        self.node_id = make_node_id(node)
        self.statements: Statements = statements_for(prefix)
        self.insert_channel = insert_channel(prefix)
        self.control_channel = control_channel(prefix)
        self.relay_channel = relay_channel(prefix, self.node_id)
        self.pool = ConnectionPool(dsn, self.node_id, max_size=options.pool_size)
        self.inserter = InsertCombiner(self.pool, self.statements, self.insert_channel)
        self.directory = MailboxDirectory()
        self._on_stop = on_stop
        self._pid = os.getpid()
        self._local = threading.local()
        self._supervisor = Supervisor(self.node_id)
        self._producers: dict[str, pykka.ActorRef[Any]] = {}
        self._attempts: dict[str, RunningAttempts] = {}
        self.unrecorded = UnrecordedOutcomes()
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        # Ends the ticker, which keeps the lifeline heartbeating while stop()
        # waits for running jobs.
        self._ticker_done = threading.Event()
        self._stopped = False
        # Set once the node's row is written, so a failed start does not try to delete it.
        self._registered = False
        self._stop_lock = threading.Lock()

    # Lifecycle

    def start_actors(self) -> None:
        """Migrate the schema, register the node, then start every actor and the ticker."""
        with connect(self.dsn, "migrator", self.node_id) as conn:
            migrate(conn, self.prefix)
            if is_pooled(self.dsn):
                warn_without_statement_timeout(conn, self.node_id)
            conn.execute(
                self.statements.upsert_node,
                {
                    "node_id": self.node_id,
                    "name": self.node,
                    "queues": Jsonb(self.queues),
                    "workers": registered_worker_names(),
                },
            )
        self._registered = True
        options = self.options
        common = {"dsn": self.dsn, "prefix": self.prefix, "node_id": self.node_id}
        start = self._supervisor.start_child
        acker = start(
            "acker",
            lambda: AckerActor.start(
                insert_channel=self.insert_channel,
                secret=options.secret,
                unrecorded=self.unrecorded,
                **common,
            ),
        )
        for queue, size in self.queues.items():
            start(
                f"producer {queue}",
                self._producer_factory(queue, size, acker, common),
                on_start=self._producer_registrar(queue),
            )
        poller = start(
            "poller",
            lambda: ResultPollerActor.start(
                directory=self.directory,
                pending_ttl=options.pending_ttl,
                interval=options.safety_net_interval,
                **common,
            ),
        )
        start(
            "lifeline",
            lambda: LifelineActor.start(
                name=self.node,
                queues=self.queues,
                rescue_after=options.rescue_after,
                acker=acker,
                statistics=self._heartbeat_statistics,
                interval=options.heartbeat_interval,
                **common,
            ),
        )
        if self.queues:
            start(
                "stager",
                lambda: StagerActor.start(
                    insert_channel=self.insert_channel, interval=options.poll_interval, **common
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
                dsn=options.listen_dsn or self.dsn,
                node_id=self.node_id,
                insert_channel=self.insert_channel if options.queues else None,
                relay_channel=self.relay_channel,
                control_channel=self.control_channel,
                directory=self.directory,
                producers=self._producers,
                poller=poller,
                secret=options.secret,
            ),
        )
        assert listener.ref is not None
        statistics = listener.ref.proxy().statistics().get(timeout=START_TIMEOUT_SECONDS)
        if not statistics["connected"]:
            raise RelayError(
                f"instance {self.name!r}: the listener could not connect to PostgreSQL"
            )
        self._ticker = threading.Thread(
            target=self._tick_loop, name=f"relay_actors-ticker-{self.name}", daemon=True
        )
        self._ticker.start()
        logger.info(
            "instance %s started as node %s on schema %s with queues %s",
            self.name,
            self.node_id,
            self.prefix,
            self.queues or "{}",
            extra={"action": "instance_start", "node": self.node_id},
        )

    def _producer_factory(
        self, queue: str, size: int, acker: Any, common: dict[str, Any]
    ) -> Callable[[], pykka.ActorRef[Any]]:
        # One for every producer this queue gets, so that after a restart
        # cancellations still reach the attempts of the old producer's
        # executors, and stop() still waits for them.
        attempts = RunningAttempts()
        self._attempts[queue] = attempts

        def factory() -> pykka.ActorRef[Any]:
            return ProducerActor.start(
                queue=queue,
                executors=size,
                acker=acker,
                poll_interval=self.options.poll_interval,
                audit_interval=self.options.rescue_after,
                relaxed_claims=self.options.relaxed_claims,
                secret=self.options.secret,
                attempts=attempts,
                unrecorded=self.unrecorded,
                **common,
            )

        return factory

    def _producer_registrar(self, queue: str) -> Callable[[pykka.ActorRef[Any]], None]:
        """Return a callback that makes the listener wake the queue's current producer."""

        def register(producer: pykka.ActorRef[Any]) -> None:
            self._producers[queue] = producer

        return register

    def _tick_loop(self) -> None:
        ticks = 0
        while not self._ticker_done.wait(TICK_SECONDS):
            if self._stopping.is_set():
                # Running jobs may take the whole shutdown grace period. The
                # heartbeat goes on, or other nodes would rescue those jobs and
                # run them a second time. Nothing else ticks, and no crashed
                # actor is restarted, so no new job is claimed.
                if "lifeline" in self._supervisor.names():
                    self._supervisor.slot("lifeline").tell(Tick())
                continue
            ticks += 1
            if ticks % SUPERVISE_EVERY_TICKS == 0:
                self._supervisor.check()
            for name in self._supervisor.names():
                if name != "listener":
                    self._supervisor.slot(name).tell(Tick())

    def _heartbeat_statistics(self) -> dict[str, Any]:
        """Return the figures written with each heartbeat, which `relay-actors status` shows.

        Runs on the lifeline's thread. Every actor is asked at once, and one
        that does not reply within HEARTBEAT_ASK_SECONDS (a producer inside a
        slow claim) is left out of this heartbeat.
        """
        deadline = time.monotonic() + HEARTBEAT_ASK_SECONDS
        producers = {
            queue: _ask_statistics(producer) for queue, producer in self._producers.items()
        }
        mailboxes = [_ask_statistics(mailbox) for mailbox in self.directory.mailboxes()]
        queues: dict[str, dict[str, int]] = {}
        for queue, future in producers.items():
            figures = _reply(future, deadline)
            if figures is not None:
                queues[queue] = {"executors": figures["executors"], "busy": figures["busy"]}
        pending = 0
        for future in mailboxes:
            figures = _reply(future, deadline)
            pending += 0 if figures is None else figures["pending"]
        return {
            "mailboxes": len(self.directory),
            "restarts": self._supervisor.restarts(),
            "pending_relays": pending,
            "queues": queues,
        }

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming jobs, let running ones finish within `grace` seconds, then stop.

        Jobs that finish in time are recorded and announced. An attempt still
        running at the deadline is released: it is recorded as failed (its job
        becomes available to other nodes, or discarded after its last attempt),
        its daemon thread is left running, and whatever it returns is dropped.
        Every connection is closed. Calling stop twice is harmless.

        Raises:
            InstanceForkedError: called in a process forked from the one that
                started the instance, which still runs it.
        """
        self._check_same_process()
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        grace = self.options.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        self._stopping.set()
        self._drain_producers(deadline)
        for queue in list(self._producers):
            self._supervisor.stop_child(f"producer {queue}")
        acker = self._supervisor.ref("acker")
        if acker is not None:
            try:
                synced = acker.ask(Sync(), timeout=max(1.0, deadline - time.monotonic()))
                synced.get(timeout=max(1.0, deadline - time.monotonic()))
            except (pykka.Timeout, pykka.ActorDeadError):
                logger.warning("recording the last outcomes timed out at stop")
        self._ticker_done.set()
        if self._ticker is not None:
            self._ticker.join()
        for name in self._supervisor.names():
            self._supervisor.stop_child(name)
        for mailbox in self.directory.mailboxes():
            mailbox.stop()
        self._forget_node()
        self.pool.close()
        self._on_stop(self)
        logger.info("instance %s stopped", self.name, extra={"action": "instance_stop"})

    def _drain_producers(self, deadline: float) -> None:
        drains = []
        for producer in self._producers.values():
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
        for attempts in self._attempts.values():
            if not attempts.wait_until_empty(max(0.0, deadline - time.monotonic())):
                self._release_running(attempts.jobs())

    def _release_running(self, running: list[Job]) -> None:
        acker = self._supervisor.slot("acker")
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
                        message=f"node {self.node_id} stopped before attempt {job.attempt} ended",
                        trace="",
                        node_id=self.node_id,
                        relay=relay_target(job.id, job.meta, self.prefix),
                        delay=0.0,
                        retry_state="available",
                    )
                )
            )

    def _forget_node(self) -> None:
        if not self._registered:
            return
        try:
            with self.pool.connection(FORGET_NODE_TIMEOUT_SECONDS) as conn:
                conn.execute(self.statements.delete_node, {"node_id": self.node_id})
        except Exception as error:  # noqa: BLE001 - a stale node row is harmless
            logger.warning(
                "could not remove node %s from the nodes table: %s",
                self.node_id,
                error,
                extra={"action": "forget_node_failed", "node": self.node_id},
            )

    def __enter__(self) -> Instance:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # Used by Relay and by callers

    @property
    def acker(self) -> ActorSlot:
        """Slot of the actor that records outcomes, for `relay_actors.testing`."""
        return self._supervisor.slot("acker")

    @property
    def running(self) -> bool:
        return not self._stopped

    @property
    def pid(self) -> int:
        return self._pid

    def check_usable(self, *, relay: bool = True) -> None:
        """Raise unless this instance is running in the process that started it."""
        self._check_same_process()
        if self._stopped:
            raise InstanceNotFoundError(
                f"instance {self.name!r} is stopped; start it again with relay_actors.start()"
            )
        if relay and self.relay_plugin is None:
            raise ConfigurationError(
                f"instance {self.name!r} has no Relay plugin: pass plugins=[Relay] to start()"
            )

    def read_deliveries(self, job_ids: list[int], timeout: float) -> dict[int, Delivery | None]:
        """Return the outcome recorded on each job's row, or None where none is yet.

        A job without a row is left out. `timeout` bounds the wait for a
        pooled connection.
        """
        with self.pool.connection(timeout) as conn:
            rows: list[tuple[Any, ...]] = conn.execute(
                self.statements.read_outcomes, {"ids": job_ids}
            ).fetchall()
        return {int(row[0]): delivery_from_row(*row) for row in rows}

    def _check_same_process(self) -> None:
        # A forked child has none of the actors' threads, and its copies of
        # the connections belong to the parent, which still runs the instance.
        if os.getpid() != self._pid:
            raise InstanceForkedError(
                f"instance {self.name!r} was started in process {self._pid} before a fork; "
                "call relay_actors.start() in each child process after the fork"
            )

    def mailbox(self) -> pykka.ActorRef[Any]:
        """Return the calling thread's mailbox, starting it on first use."""
        holder = getattr(self._local, "holder", None)
        if holder is None or not holder.mailbox.is_alive():
            mailbox = RelayRefActor.start(self.directory, self.options.max_outcomes)
            holder = _MailboxHolder(mailbox)
            self._local.holder = holder
        return holder.mailbox

    def cancel_job(self, job_id: int, reason: str = "") -> bool:
        """Cancel a job that has not finished; return False if it had finished or is unknown.

        A waiting caller gets `Error("cancelled")` at once. A running attempt gets
        its worker's `cancellation` flag set, and its outcome is then
        dropped, since the job is already cancelled.
        """
        self.check_usable(relay=False)
        return cancel_job(self, job_id, reason)

    def statistics(self) -> dict[str, Any]:
        """Return counters of the listener, acker, producers and mailboxes."""
        result: dict[str, Any] = {
            "node_id": self.node_id,
            "mailboxes": len(self.directory),
            "restarts": self._supervisor.restarts(),
        }
        for name in self._supervisor.names():
            ref = self._supervisor.ref(name)
            if ref is not None and ref.is_alive():
                try:
                    result[name] = ref.proxy().statistics().get(timeout=5)
                except (pykka.Timeout, pykka.ActorDeadError, AttributeError):
                    continue
        return result


class _MailboxHolder:
    """Thread-local owner of a mailbox; the mailbox stops when its thread ends."""

    def __init__(self, mailbox: pykka.ActorRef[Any]) -> None:
        self.mailbox = mailbox
        weakref.finalize(self, _stop_quietly, mailbox)


def _ask_statistics(actor: pykka.ActorRef[Any]) -> pykka.Future[Any] | None:
    """Ask an actor for its `statistics()`; return None if it has stopped."""
    try:
        return actor.proxy().statistics()  # type: ignore[no-any-return]
    except pykka.ActorDeadError:
        return None


def _reply(future: pykka.Future[Any] | None, deadline: float) -> Any:
    """Return the future's value, or None if the actor died or missed the deadline."""
    if future is None:
        return None
    try:
        return future.get(timeout=max(0.0, deadline - time.monotonic()))
    except (pykka.Timeout, pykka.ActorDeadError):
        return None


def _stop_quietly(mailbox: pykka.ActorRef[Any]) -> None:
    try:
        mailbox.stop(block=False)
    except pykka.ActorDeadError:
        pass
