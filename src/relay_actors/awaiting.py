"""Awaiting relays: one shared deadline, mailbox futures first, the row as the truth.

`wait_for_results` holds the logic and yields the steps that may block (see
`await_steps`), so the blocking calls here and the coroutines of
`relay_actors.aio` share it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

import psycopg
import pykka

from relay_actors.actors.messages import READ_ROW, AwaitRefs, Deliver, Forget
from relay_actors.await_steps import Ask, Call, Collect, Pause, Step, run_blocking
from relay_actors.errors import ConfigurationError, RelayNotCommitted
from relay_actors.instance import Instance
from relay_actors.instances import get_instance
from relay_actors.results import Error, Ok, Reason
from relay_actors.store.connect import PoolTimeout
from relay_actors.telemetry import RELAY_DELIVERED, RELAY_TIMEOUT, enabled, execute
from relay_actors.wire import Delivery, Entry, to_await_result

if TYPE_CHECKING:
    from relay_actors.relay import Relay

logger = logging.getLogger("relay_actors.relay")

Result = Ok[Any] | Error

# Pause before reading rows again after the database failed a read.
ROW_RETRY_SECONDS = 0.1
# Minimum time a mailbox gets to reply, so an await at its deadline still reads
# results that are already there.
ASK_MIN_SECONDS = 0.05
# Minimum time a row read may wait for a pooled connection.
POOL_MIN_SECONDS = 0.05


def validate_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout):
        raise ConfigurationError(f"invalid timeout {timeout!r}: give a number of seconds >= 0")
    if timeout < 0:
        raise ConfigurationError(f"invalid timeout {timeout!r}: give a number of seconds >= 0")
    return float(timeout)


class _Wait:
    """The state of one await_many call."""

    def __init__(self, relays: Sequence[Relay[Any]], deadline: float, with_retries: bool) -> None:
        self.relays = relays
        self.deadline = deadline
        self.with_retries = with_retries
        self.results: list[Result | None] = [None] * len(relays)
        by_name: dict[str, Instance] = {}
        for relay in relays:
            if relay.instance not in by_name:
                by_name[relay.instance] = get_instance(relay.instance)
        self.instances = [by_name[relay.instance] for relay in relays]
        for instance in {id(instance): instance for instance in self.instances}.values():
            instance.check_usable()
        self.futures: dict[int, pykka.ThreadingFuture[Any]] = {}
        self.mailboxes: dict[int, pykka.ActorRef[Any]] = {}

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def ask(self, indexes: Sequence[int]) -> Generator[Step, Any, None]:
        """Ask each relay's mailbox for a future; a stopped mailbox's refs move to this thread's."""
        groups: dict[str, tuple[pykka.ActorRef[Any], list[int]]] = {}
        for index in indexes:
            mailbox = self.relays[index].mailbox
            if not mailbox.is_alive():
                mailbox = self.instances[index].mailbox()
            groups.setdefault(mailbox.actor_urn, (mailbox, []))[1].append(index)
        for mailbox, group in groups.values():
            items = tuple((str(self.relays[i].ref), self._job_id(i)) for i in group)
            message = AwaitRefs(items, self.with_retries)
            try:
                try:
                    futures = yield Ask(mailbox, message, max(self.remaining(), ASK_MIN_SECONDS))
                except pykka.ActorDeadError:
                    mailbox = self.instances[group[0]].mailbox()
                    futures = yield Ask(mailbox, message, max(self.remaining(), ASK_MIN_SECONDS))
            except pykka.Timeout:
                for index in group:
                    self.results[index] = Error(Reason.TIMEOUT)
                continue
            for index, future in zip(group, futures, strict=True):
                self.futures[index] = future
                self.mailboxes[index] = mailbox

    def check_transactions(self) -> Generator[Step, Any, list[int]]:
        """Settle relays inserted in a rolled-back transaction; return the others' indexes.

        Raises:
            RelayNotCommitted: a relay's inserting transaction is still open.
        """
        to_ask = []
        for index, relay in enumerate(self.relays):
            if relay.xid is None:
                to_ask.append(index)
                continue
            arguments = (self.instances[index], relay.xid, max(self.remaining(), POOL_MIN_SECONDS))
            try:
                status = yield Call(_transaction_status, arguments)
            except PoolTimeout:
                self.results[index] = Error(Reason.TIMEOUT)
                continue
            if status == "in progress":
                raise RelayNotCommitted(
                    f"the transaction that inserted job {relay.job.id} is still open; "
                    "commit it before awaiting the relay"
                )
            if status == "aborted":
                self.results[index] = Error(Reason.NOT_FOUND)
            else:
                to_ask.append(index)
        return to_ask

    def _job_id(self, index: int) -> int:
        job_id = self.relays[index].job.id
        if job_id is None:
            raise ConfigurationError(
                "relay has a job without an id; build relays with Relay.async_"
            )
        return job_id

    def collect(
        self, block: bool
    ) -> Generator[Step, Any, tuple[list[int], list[tuple[int, Delivery]]]]:
        """Take resolved futures, settling what they carry.

        Returns the indexes whose mailbox had no record (read their rows), and
        the deliveries whose result is stored only in the row.
        """
        read_rows: list[int] = []
        in_row: list[tuple[int, Delivery]] = []
        values = yield Collect(dict(self.futures), self.remaining() if block else 0.0)
        for index, value in values.items():
            del self.futures[index]
            if value is READ_ROW:
                read_rows.append(index)
            elif value.in_row:
                in_row.append((index, value))
            else:
                self.results[index] = to_await_result(value)
        return read_rows, in_row

    def read_rows(self, indexes: Sequence[int]) -> Generator[Step, Any, list[int]]:
        """Settle relays from their rows; return the indexes with no acceptable outcome yet."""
        unsettled: list[int] = []
        by_instance: dict[int, list[int]] = defaultdict(list)
        for index in indexes:
            by_instance[id(self.instances[index])].append(index)
        for group in by_instance.values():
            job_ids = [self._job_id(i) for i in group]
            timeout = max(self.remaining(), POOL_MIN_SECONDS)
            try:
                instance = self.instances[group[0]]
                deliveries = yield Call(instance.read_deliveries, (job_ids, timeout))
            except (psycopg.OperationalError, PoolTimeout) as error:
                # The database is unreachable or every connection is busy: keep
                # waiting on the mailbox, which the safety-net poll fills later.
                logger.warning(
                    "reading relay rows failed, waiting on: %s",
                    error,
                    extra={"action": "read_rows_failed"},
                )
                unsettled.extend(group)
                yield Pause(min(ROW_RETRY_SECONDS, self.remaining()))
                continue
            for index in group:
                job_id = self._job_id(index)
                if job_id not in deliveries:
                    self.results[index] = Error(Reason.NOT_FOUND)
                    continue
                delivery = deliveries[job_id]
                if delivery is not None:
                    self._share(index, delivery)
                if delivery is None or (self.with_retries and not delivery.final):
                    unsettled.append(index)
                else:
                    self.results[index] = to_await_result(delivery)
        return unsettled

    def _share(self, index: int, delivery: Delivery) -> None:
        """Give an outcome read from a row to the mailbox that expects the relay.

        The mailbox that adopted a relay never gets its notification, which
        went to the mailbox that stopped. Other awaits of the same relay, in
        this call or in another thread, wait on the adopting mailbox.
        """
        mailbox = self.mailboxes.get(index)
        if mailbox is None:
            return
        entry = Entry(mailbox.actor_urn, str(self.relays[index].ref), delivery)
        try:
            mailbox.tell(Deliver((entry,)))
        except pykka.ActorDeadError:
            pass

    def give_up(self) -> None:
        """Mark unresolved relays as timed out and tell their mailboxes to drop the waits."""
        forgets: dict[str, tuple[pykka.ActorRef[Any], list[tuple[str, Any]]]] = {}
        for index, future in self.futures.items():
            self.results[index] = Error(Reason.TIMEOUT)
            mailbox = self.mailboxes[index]
            forgets.setdefault(mailbox.actor_urn, (mailbox, []))[1].append(
                (str(self.relays[index].ref), future)
            )
        for mailbox, waits in forgets.values():
            try:
                mailbox.tell(Forget(tuple(waits)))
            except pykka.ActorDeadError:
                pass


def _transaction_status(instance: Instance, xid: str, timeout: float) -> str | None:
    """Return "committed", "aborted" or "in progress", or None if too old to know."""
    with instance.pool.connection(timeout) as conn:
        row = conn.execute(instance.statements.xact_status, {"xid": xid}).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def await_relays(relays: Sequence[Relay[Any]], timeout: float, with_retries: bool) -> list[Result]:
    """Return one result per relay, in order, by one shared deadline `timeout` seconds away.

    Blocks the calling thread, whose mailbox takes over relays whose own mailbox stopped.
    """
    return run_blocking(wait_for_results(relays, timeout, with_retries))


def wait_for_results(
    relays: Sequence[Relay[Any]], timeout: float, with_retries: bool
) -> Generator[Step, Any, list[Result]]:
    """Yield the steps of awaiting `relays` by one deadline; return one result per relay.

    If the generator is closed early (its caller was interrupted or its task
    cancelled), the mailboxes drop its waiting futures, and the jobs run on.
    """
    started = time.monotonic()
    deadline = started + validate_timeout(timeout)
    wait = _Wait(relays, deadline, with_retries)
    try:
        yield from wait.ask((yield from wait.check_transactions()))
        block = False
        while wait.futures:
            read_rows, in_row = yield from wait.collect(block)
            if in_row:
                settled = yield from wait.read_rows([index for index, _ in in_row])
                # A row that shows no outcome yet is rare (a newer attempt started): wait again.
                yield from wait.ask(settled)
            if read_rows:
                yield from wait.ask((yield from wait.read_rows(read_rows)))
            if block and wait.remaining() <= 0:
                break
            # Past the deadline, one last collect that does not wait, even if
            # row reads keep failing and results keep pointing at the rows.
            block = (not read_rows and not in_row) or wait.remaining() <= 0
    finally:
        wait.give_up()
    results = [result if result is not None else Error(Reason.TIMEOUT) for result in wait.results]
    if enabled(RELAY_DELIVERED) or enabled(RELAY_TIMEOUT):
        _emit_relay_events(relays, results, time.monotonic() - started)
    return results


def _emit_relay_events(relays: Sequence[Relay[Any]], results: list[Result], wait: float) -> None:
    """Emit one delivered or timeout event per relay; `wait` is the await's duration in seconds."""
    now = time.time()
    for relay, result in zip(relays, results, strict=True):
        metadata = {
            "job_id": relay.job.id,
            "queue": relay.job.queue,
            "worker": relay.job.worker,
            "ref": str(relay.ref),
            "instance": relay.instance,
        }
        if isinstance(result, Error) and result.reason == Reason.TIMEOUT:
            execute(RELAY_TIMEOUT, {"wait": wait}, metadata)
            continue
        if isinstance(result, Ok):
            metadata["outcome"] = "ok"
        elif isinstance(result.reason, Reason):
            metadata["outcome"] = result.reason.value
        else:
            metadata["outcome"] = "job_error"
        inserted_at = relay.job.inserted_at
        # The row's inserted_at is on the database's clock, so clock skew between
        # this host and the database shifts the latency.
        latency = None if inserted_at is None else now - inserted_at.timestamp()
        execute(RELAY_DELIVERED, {"wait": wait, "latency": latency}, metadata)
