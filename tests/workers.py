"""Worker classes for the test suite.

Workers must be defined at module level, so every test and every worker node
process (`python -m relay_actors worker --module tests.workers`) registers
them under the same names.
"""

from __future__ import annotations

import base64
import os
import random
import threading
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

from relay_actors import Cancel, Discard, Error, Job, Relay, Snooze, Worker, codec
from tests.values import Color, Point, Unregistered

QUICK_QUEUE = "quick"
SLOW_QUEUE = "slow"


class Echo(Worker[Any], queue=QUICK_QUEUE):
    """Return `args["value"]`."""

    def perform(self, job: Job) -> Any:
        return job.args["value"]


class Double(Worker[int], queue=QUICK_QUEUE):
    """Return twice `args["int"]`."""

    def perform(self, job: Job) -> int:
        return int(job.args["int"]) * 2


class Fail(Worker[None], queue=QUICK_QUEUE, max_attempts=1):
    """Raise ValueError with `args["message"]`. The job has one attempt, so the error is final."""

    def perform(self, job: Job) -> None:
        raise ValueError(job.args["message"])


class FailWithBackoff(Worker[None], queue=QUICK_QUEUE, max_attempts=3):
    """Raise ValueError; the retry's delay is `float(args["backoff"])`, such as "1e15" or "nan"."""

    def perform(self, job: Job) -> None:
        raise ValueError("fails with its own backoff")

    def backoff(self, job: Job) -> float:
        return float(job.args["backoff"])


class Sleep(Worker[Any], queue=SLOW_QUEUE):
    """Block for `args["seconds"]`, then return `args.get("value")`."""

    def perform(self, job: Job) -> Any:
        threading.Event().wait(float(job.args["seconds"]))
        return job.args.get("value")


class Snoozer(Worker[None], queue=QUICK_QUEUE):
    """Snooze for a minute, so the job stays scheduled for the rest of the test."""

    def perform(self, job: Job) -> Snooze:
        return Snooze(60)


class Canceller(Worker[None], queue=QUICK_QUEUE):
    """Cancel the job with `args["reason"]`."""

    def perform(self, job: Job) -> Cancel:
        return Cancel(job.args.get("reason", "cancelled by the test"))


class Discarder(Worker[None], queue=QUICK_QUEUE):
    """Discard the job with `args["reason"]`."""

    def perform(self, job: Job) -> Discard:
        return Discard(job.args.get("reason", "discarded by the test"))


def blob(size: int, *, seed: int | None = None, random_bytes: bool = False) -> bytes:
    """Return the bytes that Blob returns for these arguments.

    Random bytes do not compress. A seed makes them reproducible, so a test
    can measure the encoded size of the exact value a job will return.
    """
    if seed is not None:
        return random.Random(seed).randbytes(size)
    if random_bytes:
        return os.urandom(size)
    return b"x" * size


class Blob(Worker[Any], queue=QUICK_QUEUE):
    """Return `args["size"]` bytes: repeated, from os.urandom (`random`), or seeded (`seed`).

    With `args["kind"] == "str"` the value is text of that many characters.
    """

    def perform(self, job: Job) -> bytes | str:
        size = int(job.args["size"])
        data = blob(size, seed=job.args.get("seed"), random_bytes=bool(job.args.get("random")))
        if job.args.get("kind") == "str":
            return data.hex()[:size]
        return data


class Unencodable(Worker[object], queue=QUICK_QUEUE):
    """Return a plain `object()`, which the codec cannot encode."""

    def perform(self, job: Job) -> object:
        return object()


class Outer:
    """Namespace whose nested worker checks that names use the qualified name."""

    class Inner(Worker[None], queue=QUICK_QUEUE):
        def perform(self, job: Job) -> None:
            return None


class Flaky(Worker[str], queue=QUICK_QUEUE, max_attempts=3):
    """Fail every attempt before attempt `args["succeed_on"]`, then return "succeeded".

    A failed attempt is retried at once, with no backoff.
    """

    def perform(self, job: Job) -> str:
        if job.attempt < int(job.args["succeed_on"]):
            raise RuntimeError(f"attempt {job.attempt} failed")
        return "succeeded"

    def backoff(self, job: Job) -> float:
        return 0.0


class Rich(Worker[Any], queue=QUICK_QUEUE):
    """Return a value of a type JSON cannot carry, chosen by `args["kind"]`."""

    def perform(self, job: Job) -> Any:
        return rich_value(job.args["kind"])


def rich_value(kind: str) -> Any:
    """Return the value that Rich returns for `kind`."""
    values: dict[str, Any] = {
        "point": Point(3, 4, "registered"),
        "color": Color.GREEN,
        "set": {1, 2, 3},
        "frozenset": frozenset({"a"}),
        "datetime": datetime(2024, 2, 29, 12, 30, tzinfo=UTC),
        "date": date(2024, 2, 29),
        "timedelta": timedelta(days=1, microseconds=5),
        "decimal": Decimal("10.50"),
        "uuid": UUID("12345678-1234-5678-1234-567812345678"),
        "tuple": (1, (2, 3)),
        "bytes": b"\x00\xff",
        "unregistered": Unregistered(7),
    }
    return values[kind]


# Workers of the fault and lifecycle tests.

FAULT_QUEUE = "fault"
SINGLE_QUEUE = "single"


class BlocksFirstAttempt(Worker[str], queue=FAULT_QUEUE, max_attempts=3):
    """Block the first attempt for `args["block_seconds"]`, and return at once on later ones.

    The result is "attempt N", so a test can check which attempt produced it.
    """

    def perform(self, job: Job) -> str:
        if job.attempt == 1:
            self.cancellation.wait(float(job.args["block_seconds"]))
        return f"attempt {job.attempt}"


class FailsOnce(Worker[str], queue=QUICK_QUEUE, max_attempts=3):
    """Raise RuntimeError on the first attempt, then return "succeeded on attempt N".

    The retry is due 0.1 s after the failure.
    """

    def perform(self, job: Job) -> str:
        if job.attempt == 1:
            raise RuntimeError("first attempt fails")
        return f"succeeded on attempt {job.attempt}"

    def backoff(self, job: Job) -> float:
        return 0.1


class AwaitsInner(Worker[dict[str, Any]], queue=SINGLE_QUEUE):
    """Insert an Echo job on this job's queue and await it for `args["inner_timeout"]` seconds.

    Returns the inner job's id, the inner result ("ok" or the reason) and the
    seconds the inner await took. The relay goes through the instance named
    `args["instance"]`, by default "default" (the one of a worker node process).
    """

    def perform(self, job: Job) -> dict[str, Any]:
        instance = job.args.get("instance", "default")
        inner = Relay.async_(instance, Echo.new({"value": "inner"}, queue=job.queue))
        started = time.monotonic()
        result = Relay.await_(inner, timeout=float(job.args["inner_timeout"]))
        waited = time.monotonic() - started
        outcome = str(result.reason) if isinstance(result, Error) else "ok"
        return {"inner_job_id": inner.job.id, "inner": outcome, "waited": waited}


class SnoozesOnce(Worker[int], queue=QUICK_QUEUE):
    """Snooze the first run for `args["seconds"]`, then return the job's snooze count."""

    def perform(self, job: Job) -> int | Snooze:
        snoozed = int(job.meta.get("snoozed", 0))
        if snoozed == 0:
            return Snooze(float(job.args["seconds"]))
        return snoozed


class Overruns(Worker[str], queue=QUICK_QUEUE, max_attempts=1, timeout=0.3):
    """Block for `args["seconds"]`, ignoring cancellation, past the 0.3 s timeout."""

    def perform(self, job: Job) -> str:
        threading.Event().wait(float(job.args["seconds"]))
        return "finished"


class WaitsForCancel(Worker[str], queue=SLOW_QUEUE, max_attempts=1):
    """Wait up to `args["seconds"]` for cancellation, then create `args["marker"]` if cancelled.

    The marker file shows the test that the running job saw `cancelled()` turn true.
    """

    def perform(self, job: Job) -> str:
        self.cancellation.wait(float(job.args["seconds"]))
        if self.cancelled():
            Path(job.args["marker"]).write_text(f"job {job.id} saw its cancellation\n")
            return "cancelled"
        return "not cancelled"


class WaitsForFile(Worker[str], queue=SLOW_QUEUE):
    """Block until the file `args["path"]` exists, for at most `args["seconds"]`."""

    def perform(self, job: Job) -> str:
        path = Path(job.args["path"])
        deadline = time.monotonic() + float(job.args["seconds"])
        pause = threading.Event()
        while not path.exists() and time.monotonic() < deadline:
            pause.wait(0.01)
        return "released" if path.exists() else "gave up"


class MarksThenWaits(Worker[str], queue=SLOW_QUEUE):
    """Create the file `args["mark"]`, then wait as `WaitsForFile` does for `args["path"]`."""

    def perform(self, job: Job) -> str:
        Path(job.args["mark"]).touch()
        return WaitsForFile().perform(job)


# Seeded random bytes of this size encode to more than the default limit of
# 8,192 bytes, so a Scripted job of kind "too_large" gets result_too_large.
TOO_LARGE_BYTES = 9_000
SCRIPTED_KINDS = ("value", "raise", "snooze", "discard", "cancel", "too_large")


class Scripted(Worker[Any], queue=QUICK_QUEUE, max_attempts=1):
    """Wait `args["ms"]` milliseconds, then end the attempt as `args["kind"]` names.

    Kinds: "value" returns `args["value"]`, "raise" raises ValueError with
    `str(args["value"])`, "snooze" snoozes for an hour, "discard" and "cancel"
    return those markers, and "too_large" returns TOO_LARGE_BYTES seeded random
    bytes. The job has one attempt, so a raised error is final.
    """

    def perform(self, job: Job) -> Any:
        threading.Event().wait(int(job.args.get("ms", 0)) / 1000)
        kind = job.args["kind"]
        if kind == "value":
            return job.args["value"]
        if kind == "raise":
            raise ValueError(str(job.args["value"]))
        if kind == "snooze":
            return Snooze(3600)
        if kind == "discard":
            return Discard("discarded by the test")
        if kind == "cancel":
            return Cancel("cancelled by the test")
        if kind == "too_large":
            return blob(TOO_LARGE_BYTES, seed=0)
        raise KeyError(f"unknown kind {kind!r}; use one of {SCRIPTED_KINDS}")


class Decoded(Worker[Any], queue=QUICK_QUEUE):
    """Return the value whose codec encoding `args["encoded"]` carries as base64.

    Args are JSON, so this is how a test makes a job return any codec value.
    """

    def perform(self, job: Job) -> Any:
        return codec.decode(base64.b64decode(job.args["encoded"]))


class DiscardsWithNul(Worker[None], queue=QUICK_QUEUE, max_attempts=1):
    """Discard the job with a reason that contains U+0000, which the row's jsonb meta cannot hold.

    The server rejects every write of this outcome, so the acker records a
    failed attempt in its place, which discards the job at its only attempt.
    """

    def perform(self, job: Job) -> Discard:
        return Discard(reason="contains \x00")


class LogsRuns(Worker[Any], queue=QUICK_QUEUE):
    """Append the job's id to the file `args["log"]` on every run, and return `args["value"]`.

    Each run appends one short line in a single write, so that runs on several
    executors or in several processes keep their lines apart. With
    `args["seconds"]`, the run first sleeps that long.
    """

    def perform(self, job: Job) -> Any:
        time.sleep(float(job.args.get("seconds", 0)))
        with Path(job.args["log"]).open("a") as log:
            log.write(f"{job.id}\n")
        return job.args["value"]
