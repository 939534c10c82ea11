"""Messages exchanged between actors: frozen, slotted and free of live connections."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from pykka import ActorRef, ThreadingFuture

from relay_actors.job import Job
from relay_actors.wire import Delivery, Entry


@dataclass(frozen=True, slots=True)
class Poll:
    """Listener to itself: wait briefly for notifications, then poll again."""


@dataclass(frozen=True, slots=True)
class Wake:
    """A job may be available in the producer's queue."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Periodic timer message: poll for jobs or retry pending writes."""


@dataclass(frozen=True, slots=True)
class Claim:
    """Producer to itself: claim jobs for the idle executors now."""


@dataclass(frozen=True, slots=True)
class Execute:
    """Run one attempt of `job`; `cancellation` is set to ask the job to stop early."""

    job: Job
    cancellation: threading.Event


@dataclass(frozen=True, slots=True)
class CancelRunning:
    """The job was cancelled; set the cancellation flag of the attempt running it."""

    job_id: int


@dataclass(frozen=True, slots=True)
class CheckCancelled:
    """Read from the rows which running or prefetched jobs were cancelled.

    The listener sends it after each connect, because control notifications
    sent while it was disconnected are lost.
    """


@dataclass(frozen=True, slots=True)
class ExecutorIdle:
    """The executor finished an attempt, whose outcome it carries.

    `seconds` is how long the attempt ran. With `busy`, the executor has
    already started the next waiting job; else it can take another.
    """

    executor: ActorRef[Any]
    outcome: AttemptOutcome
    seconds: float
    busy: bool = False


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop claiming jobs; the reply is a future set once every executor is idle."""


@dataclass(frozen=True, slots=True)
class RelayTarget:
    """Destination of a relay job's result: the caller's channel, mailbox and ref."""

    channel: str
    mailbox: str
    ref: str
    inline: bool
    tracebacks: bool = True


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """The outcome of one attempt, ready to be written to the job's row.

    `state` is the job's next state and `status` the relay status. `result` is
    the encoded value or `JobError` stored on the row. `delay` is in seconds.
    `node` is the id of the node that claimed the attempt. The outcome is
    recorded only while the row's attempt is still that node's, because an
    attempt number is used again when a prefetched job is returned unstarted.
    `max_attempts` is the job's limit when the attempt ran, so that a failed
    attempt that replaces an unwritable outcome can end the job at its last
    attempt. None means unknown.
    """

    job_id: int
    attempt: int
    state: str
    status: str
    queue: str = ""
    result: bytes | None = None
    delay: float = 0.0
    extra_attempts: int = 0
    error: dict[str, Any] | None = None
    meta_patch: dict[str, Any] | None = None
    relay: RelayTarget | None = None
    node: str | None = None
    max_attempts: int | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """Write this outcome with the next batch."""

    outcome: AttemptOutcome


@dataclass(frozen=True, slots=True)
class Flush:
    """Acker to itself: write the outcomes received so far."""


@dataclass(frozen=True, slots=True)
class Sync:
    """The reply is a future set once every outcome received before this message is written."""


@dataclass(frozen=True, slots=True)
class Track:
    """The caller inserted relays, as (ref, job id) pairs; the mailbox expects their results."""

    items: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class AwaitRefs:
    """Ask a mailbox for one future per (ref, job id), in order.

    A future resolves to a `Delivery`, or to `READ_ROW` when the mailbox has no
    record of the ref and the caller should read the job's row.
    """

    items: tuple[tuple[str, int], ...]
    with_retries: bool


@dataclass(frozen=True, slots=True)
class PendingRefs:
    """Ask a mailbox for its (ref, job id) pairs without a final outcome.

    Refs older than `ttl` seconds that no caller awaits are dropped first; an
    await of such a ref later reads the job's row.
    """

    ttl: float


@dataclass(frozen=True, slots=True)
class Recheck:
    """Re-read the rows of every pending relay now (after a reconnect)."""


@dataclass(frozen=True, slots=True)
class Deliver:
    """Results for this mailbox, from the listener."""

    entries: tuple[Entry, ...]


@dataclass(frozen=True, slots=True)
class Forget:
    """The caller stopped waiting on these futures (its deadline passed)."""

    waits: tuple[tuple[str, ThreadingFuture[Any]], ...]


class ReadRow:
    """Marker: the mailbox has no record of the ref, so the caller reads the row."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "READ_ROW"


READ_ROW = ReadRow()

__all__ = ["READ_ROW", "Delivery"]
