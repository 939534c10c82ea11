"""Writing attempt outcomes and announcing their results, shared by the acker and producers."""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from relay_actors.actors.messages import AttemptOutcome
from relay_actors.store.statements import Statements
from relay_actors.wire import FINAL_STATES, Delivery, Entry, pack_payloads_with_ids

logger = logging.getLogger("relay_actors.acker")

Row = tuple[Any, ...]
Notification = tuple[str, str, list[tuple[int, int]]]


class OutcomeWriter:
    """Records outcomes and sends their notifications in one transaction.

    A result is announced only if its attempt was recorded. Some attempts of a
    batch may have ended already, because their jobs were cancelled, rescued
    or released. The statement then holds back every notification that
    carries one of them, and the recorded results among those are sent after
    the commit.
    """

    def __init__(self, statements: Statements, insert_channel: str, secret: bytes | None) -> None:
        self._statements = statements
        self._insert_channel = insert_channel
        self._secret = secret

    def write(self, conn: psycopg.Connection[Any], outcomes: list[AttemptOutcome]) -> None:
        """Record `outcomes` and announce their results."""
        batch = _first_per_attempt(outcomes)
        notifications = self.notifications(batch)
        if _fits_one_row(batch, notifications):
            params = _one_row_params(batch, notifications)
            statement = (
                self._statements.record_completed
                if _plainly_completed(batch[0])
                else self._statements.record_one
            )
        else:
            statement, params = self._statements.record, _params(batch, notifications)
        rows = conn.execute(statement, params).fetchall()
        self._resend_held_back(conn, batch, notifications, {(row[0], row[1]) for row in rows})

    def write_and_claim(
        self,
        conn: psycopg.Connection[Any],
        outcomes: list[AttemptOutcome],
        *,
        node: str,
        queue: str,
        limit: int,
    ) -> list[Row]:
        """Record `outcomes` and claim up to `limit` jobs of `queue` in one statement.

        Returns the claimed rows, with the columns of the claim statement.
        """
        batch = _first_per_attempt(outcomes)
        notifications = self.notifications(batch)
        claim = {"node": node, "queue": queue, "limit": limit}
        if _fits_one_row(batch, notifications):
            statement = (
                self._statements.record_completed_and_claim
                if _plainly_completed(batch[0])
                else self._statements.record_one_and_claim
            )
            params = {**_one_row_params(batch, notifications), **claim}
        else:
            statement = self._statements.record_and_claim
            params = {**_params(batch, notifications), **claim}
        rows = conn.execute(statement, params).fetchall()
        pairs = rows[0][0] if rows else []
        recorded = set()
        for pair in pairs:
            job_id, _, attempt = pair.partition(":")
            recorded.add((int(job_id), int(attempt)))
        self._resend_held_back(conn, batch, notifications, recorded)
        return [row[2:] for row in rows if row[2] is not None]

    def notifications(self, outcomes: list[AttemptOutcome]) -> list[Notification]:
        """Return (channel, payload, (job id, attempt) pairs) of each notification needed.

        Relay results are grouped by caller channel into as few payloads as fit.
        Jobs made available again (a lost attempt) wake every node of their queue.
        """
        by_channel: dict[str, list[tuple[Entry, bool]]] = defaultdict(list)
        wakes: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for outcome in outcomes:
            if outcome.state == "available":
                wakes[outcome.queue].append((outcome.job_id, outcome.attempt))
            relay = outcome.relay
            if relay is None:
                continue
            delivery = Delivery(
                outcome.job_id,
                outcome.status,
                outcome.attempt,
                outcome.state in FINAL_STATES,
                outcome.result,
            )
            entry = Entry(relay.mailbox, relay.ref, delivery)
            by_channel[relay.channel].append((entry, relay.inline))
        notifications: list[Notification] = []
        for channel, entries in by_channel.items():
            for payload, ids in pack_payloads_with_ids(entries, self._secret):
                notifications.append((channel, payload, ids))
        for queue, ids in wakes.items():
            notifications.append((self._insert_channel, queue, ids))
        return notifications

    def _resend_held_back(
        self,
        conn: psycopg.Connection[Any],
        batch: list[AttemptOutcome],
        notifications: list[Notification],
        recorded: set[tuple[int, int]],
    ) -> None:
        if len(recorded) == len(batch):
            return
        # Some attempts had ended already, so the notifications that carried
        # them were held back: send the others' results now, after the commit.
        held_back = {
            pair
            for _, _, pairs in notifications
            if not recorded.issuperset(pairs)
            for pair in pairs
        }
        resend = self.notifications(
            [o for o in batch if (o.job_id, o.attempt) in recorded & held_back]
        )
        if resend:
            # The outcomes, and any claim made with them, are committed: a
            # failure now must not make the caller drop or write them again.
            try:
                conn.execute(
                    self._statements.notify_many,
                    {
                        "channel": [channel for channel, _, _ in resend],
                        "payload": [payload for _, payload, _ in resend],
                    },
                )
            except psycopg.Error as error:
                logger.warning(
                    "sending %d held-back relay results failed; their callers read them from "
                    "the rows at the next safety-net poll or at their deadline: %s",
                    len(resend),
                    error,
                    extra={"action": "resend_failed"},
                )
        logger.info(
            "%d of %d outcomes were not recorded because their attempts had ended already "
            "(the jobs were cancelled, rescued or released)",
            len(batch) - len(recorded),
            len(batch),
            extra={"action": "record_skipped"},
        )


def _first_per_attempt(outcomes: list[AttemptOutcome]) -> list[AttemptOutcome]:
    """Keep the first outcome of each attempt, in order.

    Of two outcomes for one attempt (a release at stop and the late return),
    the first wins, as it would in two separate writes.
    """
    return list({(o.job_id, o.attempt): o for o in reversed(outcomes)}.values())[::-1]


def _fits_one_row(batch: list[AttemptOutcome], notifications: list[Notification]) -> bool:
    """Return whether the record statements for one outcome can write the batch."""
    return len(batch) == 1 and len(notifications) <= 1


def _plainly_completed(outcome: AttemptOutcome) -> bool:
    """Tell whether the record statements for a completed outcome can write `outcome`.

    They set the state, outcome, result and completion time, and nothing else.
    """
    return (
        outcome.state == "completed"
        and not outcome.error
        and not outcome.meta_patch
        and outcome.extra_attempts == 0
    )


def _one_row_params(
    batch: list[AttemptOutcome], notifications: list[Notification]
) -> dict[str, Any]:
    """Return the parameters of the record statements for one outcome, one per column.

    The notification, if any, carries only this outcome's attempt, so the
    statement sends it if the row was updated and needs no pairs.
    """
    (outcome,) = batch
    channel, payload = notifications[0][:2] if notifications else (None, None)
    columns = _outcome_columns(outcome)
    # record_one_and_claim binds the claiming node as "node".
    columns["outcome_node"] = columns.pop("node")
    return {
        **columns,
        "result": outcome.result,
        "error": Jsonb(outcome.error) if outcome.error else None,
        "meta_patch": Jsonb(outcome.meta_patch) if outcome.meta_patch else None,
        "channel": channel,
        "payload": payload,
    }


def _params(batch: list[AttemptOutcome], notifications: list[Notification]) -> dict[str, Any]:
    return {
        "outcomes": Jsonb([outcome_document(outcome) for outcome in batch]),
        "outcome_ids": [outcome.job_id for outcome in batch],
        "notifications": Jsonb(
            [
                {
                    "channel": channel,
                    "payload": payload,
                    "ids": _pairs_text(ids),
                }
                for channel, payload, ids in notifications
            ]
        ),
    }


def _pairs_text(ids: list[tuple[int, int]]) -> str:
    """Return (job id, attempt) pairs as the record statements read them: "1:2,3:1"."""
    return ",".join(f"{job_id}:{attempt}" for job_id, attempt in ids)


def _outcome_columns(outcome: AttemptOutcome) -> dict[str, Any]:
    """Return the outcome's columns that need no encoding for either record source."""
    return {
        "id": outcome.job_id,
        "attempt": outcome.attempt,
        "state": outcome.state,
        "outcome": outcome.status if outcome.relay else None,
        "delay": float(outcome.delay),
        "extra_attempts": outcome.extra_attempts,
        "node": outcome.node,
    }


def outcome_document(outcome: AttemptOutcome) -> dict[str, Any]:
    """Return the outcome as a JSON object for the record statement's batch."""
    return {
        **_outcome_columns(outcome),
        "result": None if outcome.result is None else "\\x" + outcome.result.hex(),
        "error": outcome.error or None,
        "meta_patch": outcome.meta_patch or None,
    }
