"""`Instance`: one running node of relay_actors, its actors and connections.

`relay_actors.starting` starts the node's actors, and `relay_actors.stopping` stops them.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar

import pykka

from relay_actors.actors.attempts import RunningAttempts, UnrecordedOutcomes
from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.mailbox import RelayRefActor
from relay_actors.actors.slot import ActorSlot
from relay_actors.cancelling import cancel_job
from relay_actors.errors import (
    ConfigurationError,
    InstanceForkedError,
    InstanceNotFoundError,
)
from relay_actors.inserting import InsertCombiner
from relay_actors.names import control_channel, insert_channel, make_node_id, relay_channel
from relay_actors.options import Options
from relay_actors.starting import start_actors
from relay_actors.stopping import stop_instance
from relay_actors.store.connect import ConnectionPool
from relay_actors.store.statements import Statements, statements_for
from relay_actors.supervision import Supervisor
from relay_actors.wire import Delivery, delivery_from_row

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
        start_actors(self)

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
        stop_instance(self, grace)

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
