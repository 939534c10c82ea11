"""`Options`: the validated settings of one instance, with their defaults."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from relay_actors.errors import ConfigurationError
from relay_actors.job import QUEUE_NAME_PATTERN
from relay_actors.plugin import RelayPlugin

MAX_EXECUTORS = 1000
MIN_SECRET_BYTES = 16
DEFAULT_POLL_INTERVAL = 1.0
DEFAULT_SHUTDOWN_GRACE = 15.0


@dataclass(frozen=True, slots=True)
class Options:
    """Settings of an instance. Durations are seconds.

    Attributes:
        queues: queue name to executor count; empty for an insert-and-await node.
        poll_interval: how often producers look for jobs without a notification,
            and how often the stager makes due jobs available.
        shutdown_grace: how long `stop()` lets running jobs finish.
        pool_size: connections shared by the instance's caller threads.
        max_outcomes: results each caller thread's mailbox keeps for later awaits.
        heartbeat_interval: how often the node writes its heartbeat.
        rescue_after: heartbeat age after which a node's executing jobs are rescued.
        safety_net_interval: how often the rows of pending relays are re-read.
        pending_ttl: how long a mailbox tracks a relay that no caller awaits.
        prune_after: age of finished jobs that the pruner deletes.
        prune_interval: how often the pruner runs.
        secret: key that signs relay notifications; the same on every node.
        relaxed_claims: commit claims that record no outcomes without waiting
            for the WAL flush (synchronous_commit = off), on a second
            producer connection per queue. A claim lost in a PostgreSQL crash
            makes its job claimable again, so an attempt that was running
            may run a second time. Recorded outcomes stay durable.
        relaxed_outcomes: commit claims and recorded outcomes without waiting
            for the WAL flush, on one producer connection per queue. An
            outcome lost in a PostgreSQL crash leaves its job executing until
            the producer's audit or a rescue finds it, so a job whose caller
            already got its result may run again. Inserts stay durable, and so
            do the outcomes that the acker records after a failed write.
            Direct connections only.
        pgbouncer: every connection but the listener's goes through PgBouncer
            in transaction pooling mode, so none keeps session state: no
            prepared statements, no session settings.
        listen_dsn: DSN of the listener's connection, which must reach
            PostgreSQL directly or through session pooling, because LISTEN
            does not work through transaction pooling. None uses the `dsn`.
    """

    queues: Mapping[str, int]
    plugin: RelayPlugin | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    pool_size: int = 10
    max_outcomes: int = 10_000
    heartbeat_interval: float = 5.0
    rescue_after: float = 60.0
    safety_net_interval: float = 5.0
    pending_ttl: float = 3600.0
    prune_after: float = 86_400.0
    prune_interval: float = 60.0
    secret: bytes | None = None
    relaxed_claims: bool = False
    relaxed_outcomes: bool = False
    pgbouncer: bool = False
    listen_dsn: str | None = None

    def __post_init__(self) -> None:
        _check_queues(self.queues)
        for name in (
            "poll_interval",
            "heartbeat_interval",
            "rescue_after",
            "safety_net_interval",
            "pending_ttl",
            "prune_after",
            "prune_interval",
        ):
            _check_seconds(name, getattr(self, name), allow_zero=False)
        _check_seconds("shutdown_grace", self.shutdown_grace, allow_zero=True)
        for name in ("pool_size", "max_outcomes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"invalid {name} {value!r}: give an int >= 1")
        if self.secret is not None and (
            not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_BYTES
        ):
            raise ConfigurationError(
                f"invalid secret: give at least {MIN_SECRET_BYTES} bytes of random data, "
                "the same on every node, for example secrets.token_hex(32)"
            )
        for name in ("relaxed_claims", "relaxed_outcomes", "pgbouncer"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(
                    f"invalid {name} {getattr(self, name)!r}: give True or False"
                )
        if self.listen_dsn is not None and (
            not isinstance(self.listen_dsn, str) or not self.listen_dsn
        ):
            raise ConfigurationError(
                f"invalid listen_dsn {self.listen_dsn!r}: give a PostgreSQL DSN, or None"
            )
        if self.pgbouncer and self.listen_dsn is None:
            raise ConfigurationError(
                "pgbouncer=True needs listen_dsn='postgresql://...', a DSN that reaches "
                "PostgreSQL directly, because LISTEN does not work through transaction pooling"
            )
        if self.relaxed_outcomes and self.pgbouncer:
            raise ConfigurationError(
                "relaxed_outcomes=True (--relaxed-outcomes) does not work with pgbouncer=True "
                "(--pgbouncer): through transaction pooling each write would need its own "
                "transaction to turn off synchronous_commit, which costs more than the WAL "
                "flush it saves. Turn relaxed_outcomes off, or give the worker nodes a role "
                "of their own with ALTER ROLE ... SET synchronous_commit = off, which relaxes "
                "all their commits"
            )
        if self.rescue_after <= 2 * self.heartbeat_interval:
            raise ConfigurationError(
                f"rescue_after ({self.rescue_after} s) must exceed twice heartbeat_interval "
                f"({self.heartbeat_interval} s), or live nodes would lose their jobs"
            )

    @property
    def max_connections(self) -> int:
        """Maximum number of PostgreSQL connections that a node with these options keeps open.

        Every node has a listener, an acker (connected once it records an
        outcome), a result poller and a lifeline. A node that runs queues adds
        a stager, a pruner and one producer per queue, or two per queue with
        `relaxed_claims` on direct connections, unless `relaxed_outcomes` puts
        claims back on the one connection. Caller threads share at
        most `pool_size` more. A short-lived migrator connection opens and
        closes at start, before the others.
        """
        fixed = 4
        if self.queues:
            fixed += 2 + len(self.queues)
            if self.relaxed_claims and not self.pgbouncer and not self.relaxed_outcomes:
                fixed += len(self.queues)
        return fixed + self.pool_size


def _check_seconds(name: str, value: object, *, allow_zero: bool) -> None:
    valid = (
        not isinstance(value, bool)
        and isinstance(value, int | float)
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not valid:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigurationError(f"invalid {name} {value!r}: give a number of seconds {bound}")


def _check_queues(queues: object) -> None:
    if not isinstance(queues, Mapping):
        raise ConfigurationError(
            f"invalid queues {queues!r}: give a dict of queue name to executor count"
        )
    for queue, size in queues.items():
        if not isinstance(queue, str) or not QUEUE_NAME_PATTERN.fullmatch(queue):
            raise ConfigurationError(
                f"invalid queue name {queue!r}: use 1 to 128 letters, digits and _ . : -"
            )
        if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_EXECUTORS:
            raise ConfigurationError(
                f"invalid executor count {size!r} for queue {queue!r}: "
                f"give an int from 1 to {MAX_EXECUTORS}"
            )
