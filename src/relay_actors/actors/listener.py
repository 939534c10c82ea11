"""ListenerActor: the node's LISTEN connection, routing notifications to actors."""

from __future__ import annotations

import logging
import random
import selectors
import time
from typing import Any

import psycopg
import pykka
from psycopg import sql

from relay_actors.actors.directory import MailboxDirectory
from relay_actors.actors.inbox import WakingInbox
from relay_actors.actors.mailbox import post_quietly
from relay_actors.actors.messages import (
    CancelRunning,
    CheckCancelled,
    Deliver,
    Poll,
    Recheck,
    Wake,
)
from relay_actors.actors.slot import ActorSlot
from relay_actors.store.connect import connect
from relay_actors.telemetry import LISTENER_CONNECTED, LISTENER_DISCONNECTED, enabled, execute
from relay_actors.wire import Entry, EnvelopeError, parse_control, parse_payload, verify_entry

logger = logging.getLogger("relay_actors.listener")

# Maximum wait for a notification before the listener handles its own Poll
# message again. Other messages end a wait at once (see WakingInbox). With
# waits of 50 ms, the wake-ups of the caller's and the worker's listeners
# raised the p99 of 5,000 sequential round trips on a 2-vCPU machine from
# about 1.7 to about 2.0 ms (means of four runs each).
POLL_SECONDS = 1.0
RECONNECT_MIN_SECONDS = 0.1
RECONNECT_MAX_SECONDS = 5.0
WARNING_INTERVAL_SECONDS = 1.0
# Inbox length at which a result wakes its mailbox anyway, so a mailbox that no
# caller awaits keeps at most this many messages unhandled.
QUIET_INBOX_LIMIT = 256


def _tell(actor: pykka.ActorRef[Any], message: Any) -> None:
    """Send `message`, ignoring an actor that stopped (the supervisor restarts it)."""
    try:
        actor.tell(message)
    except pykka.ActorDeadError:
        pass


class _RateLimitedWarning:
    """Logs at most one WARNING per interval for one kind of fault, with a count."""

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self._last = 0.0
        self._suppressed = 0

    def warn(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < WARNING_INTERVAL_SECONDS:
            self._suppressed += 1
            return
        suppressed, self._suppressed, self._last = self._suppressed, 0, now
        logger.warning(
            message + " (%d more since the last warning)",
            *args,
            suppressed,
            extra={"action": self._kind},
        )


class ListenerActor(pykka.ThreadingActor):
    """Owns one dedicated autocommit connection that LISTENs for the node.

    Relay notifications go to the mailbox named in each entry; insert
    notifications wake the producer of the queue they name. The actor waits
    on its connection's socket and on its inbox's (a `WakingInbox`), sending
    itself `Poll` between waits, so a stop request or an `ask` is handled as
    soon as it arrives. A malformed notification is logged and dropped. A
    lost connection is reopened with jittered backoff.
    """

    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> WakingInbox:
        return WakingInbox()

    def __init__(
        self,
        *,
        dsn: str,
        node_id: str,
        insert_channel: str | None,
        relay_channel: str,
        control_channel: str,
        directory: MailboxDirectory,
        producers: dict[str, pykka.ActorRef[Any]],
        poller: ActorSlot,
        secret: bytes | None = None,
    ) -> None:
        super().__init__()
        self._secret = secret
        self._forged = _RateLimitedWarning("forged_notification")
        self._dsn = dsn
        self._node_id = node_id
        self._insert_channel = insert_channel
        self._relay_channel = relay_channel
        self._control_channel = control_channel
        self._poller = poller
        self._directory = directory
        self._producers = producers
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        # Set on each connect, until the notifications psycopg kept are taken.
        self._unread_backlog = False
        self._reconnect_delay = RECONNECT_MIN_SECONDS
        self._down_since: float | None = None
        self._connected_at = 0.0
        self._malformed = _RateLimitedWarning("bad_notification")
        self._next_connect_at = 0.0
        self.unroutable = 0
        self.delivered = 0
        self.dropped = 0
        self.connects = 0
        # Notifications received on the insert channel, which a node without
        # queues does not listen on.
        self.insert_notifications = 0

    def on_start(self) -> None:
        self._connect()
        self.actor_ref.tell(Poll())

    def on_stop(self) -> None:
        self._close("stopped", None)
        self._inbox.close()

    def on_failure(self, *exc_info: Any) -> None:
        self._close("crashed", exc_info[1] if len(exc_info) > 1 else None)
        self._inbox.close()

    @property
    def _inbox(self) -> WakingInbox:
        inbox = self.actor_inbox
        assert isinstance(inbox, WakingInbox)  # made by _create_actor_inbox
        return inbox

    def _close(self, reason: str, error: BaseException | None) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
            logger.info(
                "listener for node %s closed its connection: %s",
                self._node_id,
                reason,
                extra={"action": "listener_closed", "node": self._node_id},
            )
            self._emit_disconnected(reason, error)

    def _emit_disconnected(self, reason: str, error: BaseException | None) -> None:
        """Emit the disconnected event; `reason` is "connection_lost", "stopped" or "crashed"."""
        if enabled(LISTENER_DISCONNECTED):
            execute(
                LISTENER_DISCONNECTED,
                {"uptime": time.monotonic() - self._connected_at},
                {"node": self._node_id, "reason": reason, "error": error},
            )

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, Poll):
            self._poll()
            self.actor_ref.tell(Poll())
        return None

    def statistics(self) -> dict[str, Any]:
        return {
            "connected": self._conn is not None,
            "connects": self.connects,
            "delivered": self.delivered,
            "dropped": self.dropped,
            "unroutable": self.unroutable,
            "insert_notifications": self.insert_notifications,
        }

    def _connect(self) -> bool:
        conn = None
        try:
            conn = connect(self._dsn, "listener", self._node_id)
            # A node without queues has no use for insert wake-ups, and skips
            # the work of receiving one per insert.
            channels = (self._insert_channel, self._relay_channel, self._control_channel)
            for channel in channels:
                if channel is not None:
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        except psycopg.Error as error:
            if conn is not None:
                conn.close()
            if self._down_since is None:
                self._down_since = time.monotonic()
                logger.warning(
                    "listener for node %s cannot connect, retrying: %s",
                    self._node_id,
                    error,
                    extra={"action": "listener_down", "node": self._node_id},
                )
            return False
        self._conn = conn
        self._reconnect_delay = RECONNECT_MIN_SECONDS
        self.connects += 1
        self._connected_at = time.monotonic()
        downtime = None
        if self._down_since is not None:
            downtime = self._connected_at - self._down_since
            logger.warning(
                "listener for node %s reconnected after %.1f s",
                self._node_id,
                downtime,
                extra={"action": "listener_reconnected", "node": self._node_id},
            )
            self._down_since = None
        else:
            logger.info(
                "listener for node %s connected",
                self._node_id,
                extra={"action": "listener_connected", "node": self._node_id},
            )
        if enabled(LISTENER_CONNECTED):
            execute(
                LISTENER_CONNECTED,
                {"downtime": downtime, "connects": self.connects},
                {"node": self._node_id},
            )
        # Notifications sent while no listener was connected are lost, both
        # during an outage and while a crashed listener was restarted: every
        # producer claims once and reads which of its jobs were cancelled, and
        # every pending relay's row is read again.
        for producer in list(self._producers.values()):
            _tell(producer, Wake())
            _tell(producer, CheckCancelled())
        self._poller.tell(Recheck())
        self._unread_backlog = True
        return True

    def _poll(self) -> None:
        """Wait for notifications and handle them, or reconnect; return when a message waits."""
        inbox = self._inbox
        inbox.clear_wakeups()
        if not inbox.empty():
            return
        if self._conn is None:
            wait = self._next_connect_at - time.monotonic()
            if wait > 0:
                inbox.wait(min(wait, POLL_SECONDS))
                return
            if not self._connect():
                jittered = self._reconnect_delay * random.uniform(0.5, 1.0)
                self._next_connect_at = time.monotonic() + jittered
                self._reconnect_delay = min(self._reconnect_delay * 2, RECONNECT_MAX_SECONDS)
            return
        try:
            self._wait_and_take(inbox)
        except psycopg.Error as error:
            self._down_since = time.monotonic()
            logger.warning(
                "listener for node %s lost its connection: %s",
                self._node_id,
                error,
                extra={"action": "listener_down", "node": self._node_id},
            )
            self._conn.close()
            self._conn = None
            self._emit_disconnected("connection_lost", error)

    def _wait_and_take(self, inbox: WakingInbox) -> None:
        """Handle notifications as they arrive, for up to POLL_SECONDS or until a message waits.

        Raises:
            psycopg.Error: the connection failed.
        """
        assert self._conn is not None
        if self._unread_backlog:
            # Notifications that came with the replies to LISTEN wait in
            # psycopg, not on the socket, so no wait would end for them.
            self._unread_backlog = False
            self._take_notifications()
        deadline = time.monotonic() + POLL_SECONDS
        # A selector, unlike select.select, takes descriptors above 1023,
        # which a process with many open files hands out.
        with selectors.DefaultSelector() as selector:
            selector.register(self._conn.fileno(), selectors.EVENT_READ, "connection")
            selector.register(inbox.fileno(), selectors.EVENT_READ, "inbox")
            while (remaining := deadline - time.monotonic()) > 0:
                ready = {key.data for key, _ in selector.select(remaining)}
                if "connection" in ready:
                    self._take_notifications()
                if "inbox" in ready:
                    return

    def _take_notifications(self) -> None:
        """Handle the notifications received so far, without waiting for more."""
        assert self._conn is not None
        for notify in self._conn.notifies(timeout=0):
            self._handle(notify.channel, notify.payload)

    def _handle(self, channel: str, payload: str) -> None:
        # Any session of the database can send to these channels, so no
        # payload may stop the listener: an unexpected error drops the payload.
        try:
            self._dispatch(channel, payload)
        except Exception as error:  # noqa: BLE001 - logged, rate-limited and dropped
            self.dropped += 1
            self._malformed.warn(
                "listener dropped a notification it could not handle: %s: %s",
                type(error).__qualname__,
                error,
            )

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == self._relay_channel:
            self._route_results(payload)
        elif channel == self._insert_channel:
            self.insert_notifications += 1
            producer = self._producers.get(payload)
            if producer is not None:
                _tell(producer, Wake())
        elif channel == self._control_channel:
            self._control(payload)

    def _control(self, payload: str) -> None:
        job_id = parse_control(payload, self._secret)
        if job_id is None:
            self.dropped += 1
            self._malformed.warn(
                "listener dropped a malformed or unsigned control notification %.40r", payload
            )
            return
        for producer in list(self._producers.values()):
            _tell(producer, CancelRunning(job_id))

    def _route_results(self, payload: str) -> None:
        try:
            entries = parse_payload(payload)
        except EnvelopeError as error:
            self.dropped += 1
            self._malformed.warn("listener dropped a malformed relay notification: %s", error)
            return
        targets: dict[str, tuple[pykka.ActorRef[Any], list[Entry]]] = {}
        for entry in entries:
            if self._secret is not None and not verify_entry(entry, self._secret):
                self.dropped += 1
                self._forged.warn(
                    "listener dropped a relay result for job %s without a valid signature",
                    entry.delivery.job_id,
                )
                continue
            mailbox = self._directory.route(entry.mailbox, entry.ref)
            if mailbox is None:
                # The caller's thread ended; an await from another thread reads the row.
                self.unroutable += 1
                logger.debug(
                    "no mailbox for relay %s; its result stays on the row",
                    entry.ref,
                    extra={"action": "relay_unroutable", "ref": entry.ref},
                )
                continue
            self._resolve_waiting(entry)
            targets.setdefault(mailbox.actor_urn, (mailbox, []))[1].append(entry)
        for mailbox, group in targets.values():
            try:
                self._deliver(mailbox, tuple(group))
                self.delivered += len(group)
            except pykka.ActorDeadError:
                self.unroutable += len(group)

    def _deliver(self, mailbox: pykka.ActorRef[Any], entries: tuple[Entry, ...]) -> None:
        """Give `entries` to their mailbox, waking its thread only when a caller needs it.

        Results that no caller waits for yet, and final results whose callers
        got them from `_resolve_waiting`, only update the mailbox's records.
        They are queued without a wake-up while the mailbox's inbox is short,
        and the mailbox handles them before its next await or safety-net poll.
        Each wake-up costs a thread switch, so under load this saves one per
        result notification and mailbox.

        Raises:
            pykka.ActorDeadError: the mailbox has stopped.
        """
        post_quietly(mailbox, Deliver(entries), QUIET_INBOX_LIMIT)
        # Checked after queueing, because a future listed before then may
        # belong to a sleeping mailbox, which must wake to handle these entries.
        if any(self._directory.has_waiting(entry.ref) for entry in entries):
            mailbox.tell(Deliver(()))

    def _resolve_waiting(self, entry: Entry) -> None:
        """Give a final result to the futures that callers wait on.

        This wakes each caller directly, one thread hand-off sooner than the
        mailbox could. The mailbox still gets the result, for its records.
        """
        if not entry.delivery.final:
            return
        for future in self._directory.take_waiting(entry.ref):
            future.offer(entry.delivery)
