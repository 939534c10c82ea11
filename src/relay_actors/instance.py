"""`Instance`: one running node of relay_actors, and `start()` that makes it."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import pykka
from psycopg.types.json import Jsonb

from relay_actors import embedded
from relay_actors.actors.acker import AckerActor
from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.listener import ListenerActor
from relay_actors.actors.mailbox import DEFAULT_MAX_OUTCOMES, RelayRefActor
from relay_actors.actors.messages import Drain, Sync, Tick
from relay_actors.actors.producer import ProducerActor
from relay_actors.errors import (
    ConfigurationError,
    InstanceForkedError,
    InstanceNotFoundError,
    RelayError,
)
from relay_actors.job import QUEUE_NAME_PATTERN
from relay_actors.names import (
    default_node_name,
    insert_channel,
    make_node_id,
    relay_channel,
    validate_prefix,
)
from relay_actors.plugin import RelayPlugin
from relay_actors.store.connect import EMBEDDED, ConnectionPool, connect, resolve_dsn
from relay_actors.store.migrations import migrate
from relay_actors.store.statements import Statements, statements_for
from relay_actors.worker import registered_worker_names

logger = logging.getLogger("relay_actors.instance")

DEFAULT_NAME = "default"
DEFAULT_POLL_INTERVAL = 1.0
DEFAULT_SHUTDOWN_GRACE = 15.0
DEFAULT_POOL_SIZE = 10
START_TIMEOUT_SECONDS = 10.0

_instances: dict[str, Instance | None] = {}
_instances_lock = threading.Lock()


class Instance:
    """A started node: its actors, connections and options. Made by `start()`."""

    def __init__(
        self,
        *,
        name: str,
        dsn: str,
        queues: Mapping[str, int],
        plugin: RelayPlugin | None,
        prefix: str,
        node: str,
        poll_interval: float,
        shutdown_grace: float,
        pool_size: int,
        max_outcomes: int,
        embedded_server: bool,
    ) -> None:
        self.name = name
        self.dsn = dsn
        self.queues = dict(queues)
        self.relay_plugin = plugin
        self.prefix = prefix
        self.node = node
        self.node_id = make_node_id(node)
        self.statements: Statements = statements_for(prefix)
        self.insert_channel = insert_channel(prefix)
        self.relay_channel = relay_channel(prefix, self.node_id)
        self.poll_interval = poll_interval
        self.shutdown_grace = shutdown_grace
        self.max_outcomes = max_outcomes
        self.pool = ConnectionPool(dsn, self.node_id, max_size=pool_size)
        self.directory = MailboxDirectory()
        self._embedded = embedded_server
        self._pid = os.getpid()
        self._local = threading.local()
        self._acker: pykka.ActorRef[Any] | None = None
        self._producers: dict[str, pykka.ActorRef[Any]] = {}
        self._listener: pykka.ActorRef[Any] | None = None
        self._ticker: threading.Thread | None = None
        self._stopping = threading.Event()
        self._stopped = False
        self._stop_lock = threading.Lock()

    # Lifecycle

    def _start(self) -> None:
        with connect(self.dsn, "migrator", self.node_id) as conn:
            migrate(conn, self.prefix)
            conn.execute(
                self.statements.upsert_node,
                {
                    "node_id": self.node_id,
                    "name": self.node,
                    "queues": Jsonb(self.queues),
                    "workers": registered_worker_names(),
                },
            )
        self._acker = AckerActor.start(dsn=self.dsn, prefix=self.prefix, node_id=self.node_id)
        for queue, size in self.queues.items():
            self._producers[queue] = ProducerActor.start(
                dsn=self.dsn,
                prefix=self.prefix,
                queue=queue,
                executors=size,
                node_id=self.node_id,
                acker=self._acker,
            )
        self._listener = ListenerActor.start(
            dsn=self.dsn,
            node_id=self.node_id,
            insert_channel=self.insert_channel,
            relay_channel=self.relay_channel,
            directory=self.directory,
            producers=self._producers,
        )
        statistics = self._listener.proxy().statistics().get(timeout=START_TIMEOUT_SECONDS)
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

    def _tick_loop(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            targets = [*self._producers.values(), self._acker]
            for actor in targets:
                if actor is not None:
                    try:
                        actor.tell(Tick())
                    except pykka.ActorDeadError:
                        pass

    def stop(self, grace: float | None = None) -> None:
        """Stop claiming jobs, let running ones finish within `grace` seconds, then stop.

        Jobs that finish in time are recorded and announced. A job still running
        at the deadline keeps its daemon thread; its row stays executing.
        Every connection is closed. Calling stop twice is harmless.
        """
        with self._stop_lock:
            if self._stopped:
                return
            self._stopped = True
        grace = self.shutdown_grace if grace is None else grace
        deadline = time.monotonic() + grace
        self._stopping.set()
        drains = [producer.ask(Drain(), block=False) for producer in self._producers.values()]
        for queue, drain in zip(self._producers, drains, strict=True):
            try:
                drain.get(timeout=max(0.0, deadline - time.monotonic())).get(
                    timeout=max(0.0, deadline - time.monotonic())
                )
            except pykka.Timeout:
                logger.warning(
                    "queue %s still had running jobs after the %.1f s grace period; they are "
                    "left on daemon threads and their jobs stay executing",
                    queue,
                    grace,
                    extra={"action": "shutdown_timeout", "queue": queue},
                )
        for producer in self._producers.values():
            producer.stop()
        if self._acker is not None:
            try:
                self._acker.ask(Sync()).get(timeout=max(1.0, deadline - time.monotonic()))
            except pykka.Timeout:
                logger.warning("recording the last outcomes timed out at stop")
            self._acker.stop()
        if self._listener is not None:
            self._listener.stop()
        for mailbox in self.directory.mailboxes():
            mailbox.stop()
        if self._ticker is not None:
            self._ticker.join()
        self._forget_node()
        self.pool.close()
        with _instances_lock:
            if _instances.get(self.name) is self:
                del _instances[self.name]
        if self._embedded:
            embedded.release_shared()
        logger.info("instance %s stopped", self.name, extra={"action": "instance_stop"})

    def _forget_node(self) -> None:
        try:
            with self.pool.connection() as conn:
                conn.execute(self.statements.delete_node, {"node_id": self.node_id})
        except Exception as error:  # noqa: BLE001 - a stale node row is harmless
            logger.warning("could not remove node %s from the nodes table: %s", self.node_id, error)

    def __enter__(self) -> Instance:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # Used by Relay

    def check_usable(self) -> None:
        """Raise unless this instance is running in the process that started it."""
        if os.getpid() != self._pid:
            raise InstanceForkedError(
                f"instance {self.name!r} was started in process {self._pid} before a fork; "
                "call relay_actors.start() in each child process after the fork"
            )
        if self._stopped:
            raise InstanceNotFoundError(
                f"instance {self.name!r} is stopped; start it again with relay_actors.start()"
            )
        if self.relay_plugin is None:
            raise ConfigurationError(
                f"instance {self.name!r} has no Relay plugin: pass plugins=[Relay] to start()"
            )

    def mailbox(self) -> pykka.ActorRef[Any]:
        """Return the calling thread's mailbox, starting it on first use."""
        holder = getattr(self._local, "holder", None)
        if holder is None or not holder.mailbox.is_alive():
            holder = _MailboxHolder(RelayRefActor.start(self.directory, self.max_outcomes))
            self._local.holder = holder
        return holder.mailbox

    def statistics(self) -> dict[str, Any]:
        """Return counters of the listener, acker, producers and mailboxes."""
        result: dict[str, Any] = {"node_id": self.node_id, "mailboxes": len(self.directory)}
        if self._listener is not None and self._listener.is_alive():
            result["listener"] = self._listener.proxy().statistics().get(timeout=5)
        if self._acker is not None and self._acker.is_alive():
            result["acker"] = self._acker.proxy().statistics().get(timeout=5)
        result["queues"] = {
            queue: producer.proxy().statistics().get(timeout=5)
            for queue, producer in self._producers.items()
            if producer.is_alive()
        }
        return result


class _MailboxHolder:
    """Thread-local owner of a mailbox; the mailbox stops when its thread ends."""

    def __init__(self, mailbox: pykka.ActorRef[Any]) -> None:
        self.mailbox = mailbox
        weakref.finalize(self, _stop_quietly, mailbox)


def _stop_quietly(mailbox: pykka.ActorRef[Any]) -> None:
    try:
        mailbox.stop(block=False)
    except pykka.ActorDeadError:
        pass


def _plugin_from(plugins: Iterable[object]) -> RelayPlugin | None:
    from relay_actors.relay import Relay

    found: RelayPlugin | None = None
    for plugin in plugins:
        if plugin is Relay:
            plugin = RelayPlugin()
        if not isinstance(plugin, RelayPlugin):
            raise ConfigurationError(f"unknown plugin {plugin!r}: give Relay or Relay.plugin(...)")
        found = plugin
    return found


def _validate_queues(queues: object) -> dict[str, int]:
    if not isinstance(queues, Mapping):
        raise ConfigurationError(
            f"invalid queues {queues!r}: give a dict of queue name to executor count"
        )
    for queue, size in queues.items():
        if not isinstance(queue, str) or not QUEUE_NAME_PATTERN.fullmatch(queue):
            raise ConfigurationError(
                f"invalid queue name {queue!r}: use 1 to 128 letters, digits and _ . : -"
            )
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1000:
            raise ConfigurationError(
                f"invalid executor count {size!r} for queue {queue!r}: give an int from 1 to 1000"
            )
    return dict(queues)


def start(
    *,
    name: str = DEFAULT_NAME,
    dsn: str | None = None,
    queues: Mapping[str, int] | None = None,
    plugins: Iterable[object] = (),
    prefix: str = "public",
    node: str | None = None,
    poll_interval: float = DEFAULT_POLL_INTERVAL,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_outcomes: int = DEFAULT_MAX_OUTCOMES,
) -> Instance:
    """Start a node: migrate the schema, then start its listener, producers and acker.

    Args:
        name: label of the instance within this process, for `Relay.async_(name, job)`.
        dsn: PostgreSQL connection string, or "embedded" for a private server.
            Defaults to $RELAY_ACTORS_DSN, then $DATABASE_URL.
        queues: queue name to number of executors; empty for a node that only
            inserts and awaits.
        plugins: `[Relay]` or `[Relay.plugin(...)]` to insert and await relays.
        prefix: PostgreSQL schema of the tables, created if missing.
        node: readable node name, default the host name.
        poll_interval: seconds between polls for jobs whose notification was missed.
        shutdown_grace: seconds `stop()` waits for running jobs.
        pool_size: connections shared by the caller threads of this instance.
        max_outcomes: results each caller thread's mailbox keeps for later awaits.

    Raises:
        ConfigurationError: an option is invalid, or no DSN is given.
        RelayError: an instance of this name is already running.
        psycopg.Error: PostgreSQL cannot be reached or the migration failed.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"invalid instance name {name!r}: give a non-empty string")
    for option, value in (("poll_interval", poll_interval), ("shutdown_grace", shutdown_grace)):
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigurationError(f"invalid {option} {value!r}: give a number of seconds >= 0")
    if poll_interval <= 0:
        raise ConfigurationError(f"invalid poll_interval {poll_interval!r}: give seconds > 0")
    if isinstance(max_outcomes, bool) or not isinstance(max_outcomes, int) or max_outcomes < 1:
        raise ConfigurationError(f"invalid max_outcomes {max_outcomes!r}: give an int >= 1")
    checked_queues = _validate_queues({} if queues is None else queues)
    plugin = _plugin_from(plugins)
    validate_prefix(prefix)
    resolved = resolve_dsn(dsn)
    with _instances_lock:
        if name in _instances:
            raise RelayError(
                f"an instance named {name!r} is already running in this process; stop it first "
                "or start this one with another name="
            )
        _instances[name] = None  # reserves the name while the instance starts
    is_embedded = resolved == EMBEDDED
    acquired = False
    instance: Instance | None = None
    try:
        if is_embedded:
            resolved = embedded.acquire_shared()
            acquired = True
        instance = Instance(
            name=name,
            dsn=resolved,
            queues=checked_queues,
            plugin=plugin,
            prefix=prefix,
            node=node or default_node_name(),
            poll_interval=float(poll_interval),
            shutdown_grace=float(shutdown_grace),
            pool_size=pool_size,
            max_outcomes=max_outcomes,
            embedded_server=is_embedded,
        )
        with _instances_lock:
            _instances[name] = instance
        instance._start()
    except BaseException:
        if instance is not None:
            instance.stop(grace=0)
        else:
            with _instances_lock:
                _instances.pop(name, None)
            if acquired:
                embedded.release_shared()
        raise
    return instance


def get_instance(name: str = DEFAULT_NAME) -> Instance:
    """Return the running instance called `name`, or raise InstanceNotFoundError."""
    if not isinstance(name, str):
        raise InstanceNotFoundError(f"instance name must be a str, got {name!r}")
    with _instances_lock:
        instance = _instances.get(name)
        running = sorted(key for key, value in _instances.items() if value is not None)
    if instance is None:
        raise InstanceNotFoundError(
            f"no running instance named {name!r} (running: {running or 'none'}); "
            f"start one with relay_actors.start(name={name!r}, ...)"
        )
    return instance


@atexit.register
def _stop_all_at_exit() -> None:
    with _instances_lock:
        running = [instance for instance in _instances.values() if instance is not None]
    for instance in running:
        if instance._pid == os.getpid():
            instance.stop(grace=0)
