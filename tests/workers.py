"""Worker classes for the test suite.

Workers must be defined at module level, so every test and every worker node
process (`python -m relay_actors worker --module tests.workers`) registers
them under the same names.
"""

from __future__ import annotations

import os
import random
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from relay_actors import Cancel, Discard, Job, Snooze, Worker
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
