"""Starting instances, and finding a running one by name."""

from __future__ import annotations

import atexit
import os
import threading
from collections.abc import Callable, Iterable, Mapping

from relay_actors import embedded
from relay_actors.errors import ConfigurationError, InstanceNotFoundError, RelayError
from relay_actors.inline import INLINE, InlineInstance, validate_testing
from relay_actors.instance import Instance
from relay_actors.names import default_node_name, validate_prefix
from relay_actors.options import Options
from relay_actors.plugin import RelayPlugin
from relay_actors.store.connect import EMBEDDED, PooledDsn, resolve_dsn

DEFAULT_NAME = "default"

_instances: dict[str, Instance | None] = {}
_lock = threading.Lock()


def _renew_lock_after_fork() -> None:
    # Another thread of the parent may have held the lock at the fork, and
    # no thread of the child would ever release it.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_renew_lock_after_fork)


def _plugin_from(plugins: Iterable[object]) -> RelayPlugin | None:
    from relay_actors.relay import Relay

    if isinstance(plugins, str | bytes) or not isinstance(plugins, Iterable):
        raise ConfigurationError(f"invalid plugins {plugins!r}: give a list such as [Relay]")
    found: RelayPlugin | None = None
    for plugin in plugins:
        if plugin is Relay:
            plugin = RelayPlugin()
        if not isinstance(plugin, RelayPlugin):
            raise ConfigurationError(f"unknown plugin {plugin!r}: give Relay or Relay.plugin(...)")
        found = plugin
    return found


def start(
    *,
    name: str = DEFAULT_NAME,
    dsn: str | None = None,
    queues: Mapping[str, int] | None = None,
    plugins: Iterable[object] = (),
    prefix: str = "public",
    node: str | None = None,
    poll_interval: float = 1.0,
    shutdown_grace: float = 15.0,
    pool_size: int = 10,
    max_outcomes: int = 10_000,
    heartbeat_interval: float = 5.0,
    rescue_after: float = 60.0,
    safety_net_interval: float = 5.0,
    pending_ttl: float = 3600.0,
    prune_after: float = 86_400.0,
    prune_interval: float = 60.0,
    secret: str | bytes | None = None,
    relaxed_claims: bool = False,
    relaxed_outcomes: bool = False,
    testing: str | None = None,
    pgbouncer: bool = False,
    listen_dsn: str | None = None,
) -> Instance:
    """Start a node: migrate the schema, then start its actors.

    The options not listed below are durations in seconds and sizes, described
    on `Options`.

    Args:
        name: label of the instance within this process, for `Relay.async_(name, job)`.
        dsn: PostgreSQL connection string, or "embedded" for a private server
            shared by this process's instances. Defaults to $RELAY_ACTORS_DSN,
            then $DATABASE_URL.
        queues: queue name to number of executors; empty for a node that only
            inserts and awaits.
        plugins: `[Relay]` or `[Relay.plugin(...)]` to insert and await relays.
        prefix: PostgreSQL schema of the tables, created if missing.
        node: readable node name, default the host name.
        secret: signs relay notifications, so results forged by another database
            role that can NOTIFY are dropped; give the same value to every node.
        pgbouncer: connect through PgBouncer in transaction pooling mode: no
            prepared statements and no session settings on any connection but
            the listener's, which uses `listen_dsn`.
        listen_dsn: DSN of the listener's direct connection to PostgreSQL;
            required with `pgbouncer`, because LISTEN needs a session.
        testing: "inline" for users' unit tests: `Relay.async_` runs one attempt
            of each job on the calling thread and `Relay.await_` returns its
            result at once. No database is used, so `dsn`, `prefix` and the
            durations are ignored.

    Raises:
        ConfigurationError: an option is invalid, or no DSN is given.
        RelayError: an instance of this name is already running.
        psycopg.Error: PostgreSQL cannot be reached or the migration failed.
    """
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"invalid instance name {name!r}: give a non-empty string")
    options = Options(
        queues={} if queues is None else queues,
        plugin=_plugin_from(plugins),
        poll_interval=poll_interval,
        shutdown_grace=shutdown_grace,
        pool_size=pool_size,
        max_outcomes=max_outcomes,
        heartbeat_interval=heartbeat_interval,
        rescue_after=rescue_after,
        safety_net_interval=safety_net_interval,
        pending_ttl=pending_ttl,
        prune_after=prune_after,
        prune_interval=prune_interval,
        secret=secret.encode() if isinstance(secret, str) else secret,
        relaxed_claims=relaxed_claims,
        relaxed_outcomes=relaxed_outcomes,
        pgbouncer=pgbouncer,
        listen_dsn=listen_dsn,
    )
    if validate_testing(testing) == INLINE:
        return _start_inline(name, node or default_node_name(), options)
    validate_prefix(prefix)
    resolved = resolve_dsn(dsn)
    with _lock:
        if _is_taken(name):
            raise _name_taken(name)
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
            dsn=PooledDsn(resolved) if options.pgbouncer else resolved,
            prefix=prefix,
            node=node or default_node_name(),
            options=options,
            on_stop=_forget(acquired),
        )
        with _lock:
            _instances[name] = instance
        instance.start_actors()
    except BaseException:
        if instance is not None:
            instance.stop(grace=0)
        else:
            with _lock:
                _instances.pop(name, None)
            if acquired:
                embedded.release_shared()
        raise
    return instance


def _name_taken(name: str) -> RelayError:
    return RelayError(
        f"an instance named {name!r} is already running in this process; stop it "
        "first, or start this one with another name="
    )


def _is_taken(name: str) -> bool:
    """Tell whether `name` belongs to an instance of this process; call with `_lock` held.

    An instance inherited through a fork belongs to the parent, so a child
    may start its own under the same name.
    """
    if name not in _instances:
        return False
    instance = _instances[name]
    return instance is None or instance.pid == os.getpid()


def _start_inline(name: str, node: str, options: Options) -> Instance:
    with _lock:
        if _is_taken(name):
            raise _name_taken(name)
        instance = InlineInstance(name=name, node=node, options=options, on_stop=_forget(False))
        _instances[name] = instance
    return instance


def _forget(embedded_server: bool) -> Callable[[Instance], None]:
    def forget(instance: Instance) -> None:
        with _lock:
            if _instances.get(instance.name) is instance:
                del _instances[instance.name]
        if embedded_server:
            embedded.release_shared()

    return forget


def get_instance(name: str = DEFAULT_NAME) -> Instance:
    """Return the running instance called `name`, or raise InstanceNotFoundError."""
    if not isinstance(name, str):
        raise InstanceNotFoundError(f"instance name must be a str, got {name!r}")
    with _lock:
        instance = _instances.get(name)
        running = sorted(key for key, value in _instances.items() if value is not None)
    if instance is None:
        raise InstanceNotFoundError(
            f"no running instance named {name!r} (running: {', '.join(running) or 'none'}); "
            f"start one with relay_actors.start(name={name!r}, ...)"
        )
    return instance


@atexit.register
def _stop_all_at_exit() -> None:
    with _lock:
        running = [instance for instance in _instances.values() if instance is not None]
    for instance in running:
        if instance.pid == os.getpid():
            instance.stop(grace=0)
