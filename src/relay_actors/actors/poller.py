"""ResultPollerActor: re-reads the rows of pending relays that missed their notification."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import psycopg
import pykka

from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.messages import Deliver, PendingRefs, Recheck
from relay_actors.actors.periodic import PeriodicActor
from relay_actors.wire import Entry, delivery_from_row

logger = logging.getLogger("relay_actors.poller")

ASK_TIMEOUT_SECONDS = 2.0
READ_BATCH = 10_000


class ResultPollerActor(PeriodicActor):
    """The safety net for lost notifications.

    Every interval, and at once after the listener reconnects, it collects the
    pending refs of every mailbox on this node and reads the rows of all of
    them in batched queries, delivering each outcome found. NOTIFY loses
    whatever is sent while a listener is disconnected, so this is what makes
    every result reach its caller.
    """

    role = "poller"

    def __init__(self, *, directory: MailboxDirectory, pending_ttl: float, **options: Any) -> None:
        super().__init__(**options)
        self._directory = directory
        self._pending_ttl = pending_ttl
        self.recovered = 0

    def receive_other(self, message: Any) -> Any:
        if isinstance(message, Recheck):
            self.run_now()
            return None
        return super().receive_other(message)

    def run_once(self, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        mailboxes = self._directory.mailboxes()
        asks = [mailbox.ask(PendingRefs(self._pending_ttl), block=False) for mailbox in mailboxes]
        owners: dict[int, list[tuple[pykka.ActorRef[Any], str]]] = defaultdict(list)
        for mailbox, ask in zip(mailboxes, asks, strict=True):
            try:
                pending = ask.get(timeout=ASK_TIMEOUT_SECONDS)
            except (pykka.Timeout, pykka.ActorDeadError):
                continue
            for ref, job_id in pending:
                owners[job_id].append((mailbox, ref))
        job_ids = list(owners)
        for first in range(0, len(job_ids), READ_BATCH):
            batch = job_ids[first : first + READ_BATCH]
            rows = conn.execute(self.statements.read_finished, {"ids": batch}).fetchall()
            self._deliver(rows, owners)

    def _deliver(
        self,
        rows: list[tuple[Any, ...]],
        owners: dict[int, list[tuple[pykka.ActorRef[Any], str]]],
    ) -> None:
        by_mailbox: dict[str, tuple[pykka.ActorRef[Any], list[Entry]]] = {}
        for row in rows:
            delivery = delivery_from_row(*row)
            if delivery is None:
                continue
            for mailbox, ref in owners[delivery.job_id]:
                entry = Entry(mailbox.actor_urn, ref, delivery)
                by_mailbox.setdefault(mailbox.actor_urn, (mailbox, []))[1].append(entry)
        for mailbox, entries in by_mailbox.values():
            try:
                mailbox.tell(Deliver(tuple(entries)))
            except pykka.ActorDeadError:
                continue
            self.recovered += len(entries)
