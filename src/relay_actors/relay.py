"""`Relay`: insert a job and await its result, wherever it runs."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

import psycopg
import pykka

from relay_actors.actors.mailbox import track
from relay_actors.awaiting import await_relays
from relay_actors.errors import ConfigurationError, InvalidJobError
from relay_actors.inserting import execute_insert
from relay_actors.instance import Instance
from relay_actors.instances import DEFAULT_NAME, get_instance
from relay_actors.job import Job, validate_job
from relay_actors.plugin import RelayPlugin
from relay_actors.results import Error, Ok

T = TypeVar("T")
# Relay is covariant in its result type, so relays of different workers mix in
# one list: `await_many([Relay[int], Relay[str]])` returns `Ok[object] | Error` items.
ResultT_co = TypeVar("ResultT_co", covariant=True)

DEFAULT_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Relay(Generic[ResultT_co]):
    """Handle of an inserted job whose result can be awaited.

    Attributes:
        job: the inserted job, with its id.
        mailbox: the inserting thread's mailbox actor, where the result arrives.
        ref: unique id of this relay, carried in the job's meta.
        instance: name of the instance that inserted the job.
        xid: id of the caller's transaction for an insert made with `conn=`,
            so an await can tell an open or rolled-back insert from a slow job.
    """

    job: Job[ResultT_co]
    mailbox: pykka.ActorRef[Any]
    ref: uuid.UUID
    instance: str = DEFAULT_NAME
    xid: str | None = None

    @staticmethod
    def plugin(
        *, max_result_bytes: int = 8192, inline_results: bool = True, tracebacks: bool = True
    ) -> RelayPlugin:
        """Return Relay plugin options for `start(plugins=[...])`; see `RelayPlugin`."""
        return RelayPlugin(
            max_result_bytes=max_result_bytes,
            inline_results=inline_results,
            tracebacks=tracebacks,
        )

    @overload
    @staticmethod
    def async_(
        job: Job[T], /, *, instance: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> Relay[T]: ...

    @overload
    @staticmethod
    def async_(
        instance: str, job: Job[T], /, *, conn: psycopg.Connection[Any] | None = None
    ) -> Relay[T]: ...

    @staticmethod
    def async_(
        *args: Any, instance: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> Relay[Any]:
        """Validate and insert a job, returning its `Relay`.

        Call as `Relay.async_(job)`, `Relay.async_("name", job)` or
        `Relay.async_(job, instance="name")`. With `conn`, the insert runs in that
        connection's open transaction, so the job exists only if it commits.
        Awaiting it before the commit raises RelayNotCommitted, and awaiting it
        after a rollback returns `Error("not_found")`.

        Raises:
            InvalidJobError: the job is invalid; nothing was inserted.
            InstanceNotFoundError: no running instance has that name.
        """
        name, jobs = _split_arguments("async_", args, instance, many=False)
        return _insert(get_instance(name), jobs, conn)[0]

    @overload
    @staticmethod
    def async_many(
        jobs: Sequence[Job[T]],
        /,
        *,
        instance: str | None = None,
        conn: psycopg.Connection[Any] | None = None,
    ) -> list[Relay[T]]: ...

    @overload
    @staticmethod
    def async_many(
        instance: str, jobs: Sequence[Job[T]], /, *, conn: psycopg.Connection[Any] | None = None
    ) -> list[Relay[T]]: ...

    @staticmethod
    def async_many(
        *args: Any, instance: str | None = None, conn: psycopg.Connection[Any] | None = None
    ) -> list[Relay[Any]]:
        """Validate every job, then insert all in one statement; return relays in input order."""
        name, jobs = _split_arguments("async_many", args, instance, many=True)
        if not jobs:
            return []
        return _insert(get_instance(name), jobs, conn)

    @staticmethod
    def await_(
        relay: Relay[T], timeout: float = DEFAULT_TIMEOUT, *, with_retries: bool = False
    ) -> Ok[T] | Error:
        """Block until the relay's job has a result, or `timeout` seconds pass.

        Returns `Ok(value)` or `Error(reason)`; `Error(Reason.TIMEOUT)` leaves
        the job running, and a later await can still return its result.
        """
        return await_relays(_check_relays("await_", [relay]), timeout, with_retries)[0]

    @staticmethod
    def await_many(
        relays: Sequence[Relay[T]],
        timeout: float = DEFAULT_TIMEOUT,
        *,
        with_retries: bool = False,
    ) -> list[Ok[T] | Error]:
        """Await all relays by one shared deadline; return results in input order.

        Relays without a result at the deadline get `Error(Reason.TIMEOUT)`.
        """
        return await_relays(_check_relays("await_many", relays), timeout, with_retries)


def _check_relays(call: str, relays: Sequence[object]) -> list[Relay[Any]]:
    """Return `relays` as a list, or raise TypeError naming the first value that is no Relay."""
    checked: list[Relay[Any]] = []
    for relay in relays:
        if not isinstance(relay, Relay):
            raise TypeError(f"{call} takes relays from Relay.async_, got {type(relay).__name__}")
        checked.append(relay)
    return checked


def _split_arguments(
    call: str, args: tuple[Any, ...], instance: str | None, *, many: bool
) -> tuple[str, list[Job]]:
    if len(args) == 2:
        if instance is not None:
            raise ConfigurationError(
                f"{call} got the instance name twice ({args[0]!r} and instance={instance!r})"
            )
        instance, payload = args
    elif len(args) == 1:
        payload = args[0]
    else:
        raise TypeError(
            f"{call} takes a job (or an instance name and a job), got {len(args)} arguments"
        )
    if many:
        if isinstance(payload, Job) or not isinstance(payload, Sequence | list | tuple):
            raise InvalidJobError([f"{call} takes a list of jobs, got {type(payload).__name__}"])
        jobs = list(payload)
    else:
        jobs = [payload]
    problems: list[str] = []
    for position, job in enumerate(jobs):
        try:
            validate_job(job)
        except InvalidJobError as error:
            label = f"job {position}: " if many else ""
            problems.extend(label + problem for problem in error.problems)
    if problems:
        raise InvalidJobError(problems)
    return (DEFAULT_NAME if instance is None else instance), jobs


def _insert(
    instance: Instance,
    jobs: list[Job],
    conn: psycopg.Connection[Any] | None,
    mailbox: pykka.ActorRef[Any] | None = None,
) -> list[Relay[Any]]:
    """Insert `jobs`; their results go to `mailbox`, by default the calling thread's."""
    instance.check_usable()
    plugin = instance.relay_plugin
    assert plugin is not None  # check_usable() raised otherwise
    if mailbox is None:
        mailbox = instance.mailbox()
    refs = [uuid.uuid4() for _ in jobs]
    options = plugin.meta_options()
    metas = [
        {
            **job.meta,
            "relay": {
                "ref": str(ref),
                "node": instance.node_id,
                "mailbox": mailbox.actor_urn,
                **options,
            },
        }
        for job, ref in zip(jobs, refs, strict=True)
    ]
    if conn is not None and not isinstance(conn, psycopg.Connection):
        raise ConfigurationError(f"conn must be a psycopg.Connection, got {type(conn).__name__}")
    xid = None
    if conn is not None and not instance.inline:
        xid_row = conn.execute(instance.statements.current_xid).fetchone()
        xid = str(xid_row[0]) if xid_row else None
        rows = execute_insert(instance.statements, instance.insert_channel, conn, jobs, metas)
    else:
        rows = instance.inserter.insert(jobs, metas)
    relays: list[Relay[Any]] = []
    for job, meta, ref, row in zip(jobs, metas, refs, rows, strict=True):
        job_id, state, inserted_at, scheduled_at = row
        inserted = dataclasses.replace(
            job,
            id=job_id,
            state=state,
            meta=meta,
            inserted_at=inserted_at,
            scheduled_at=scheduled_at,
        )
        relays.append(Relay(inserted, mailbox, ref, instance.name, xid))
    # An inline instance delivered every result during the insert. Tracking
    # them now would list evicted results as pending again, and awaits of
    # those would wait for a notification that never comes.
    if not instance.inline:
        tracked = tuple((str(relay.ref), row[0]) for relay, row in zip(relays, rows, strict=True))
        track(mailbox, tracked)
    return relays
