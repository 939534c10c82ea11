"""Workers the demo runs on its worker node."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from relay_actors import Cancel, Discard, Job, Snooze, Worker

QUEUE = "demo"


def file_stats(data: bytes) -> dict[str, Any]:
    """Return the line count, word count and SHA-256 of a file's bytes."""
    return {
        "lines": data.count(b"\n"),
        "words": len(data.split()),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


class FileStats(Worker[dict[str, Any]], queue=QUEUE, max_attempts=1):
    """Read the file at args["path"] and return its statistics."""

    def perform(self, job: Job) -> dict[str, Any]:
        return file_stats(Path(job.args["path"]).read_bytes())


class SnoozeOnce(Worker[None], queue=QUEUE):
    def perform(self, job: Job) -> Snooze:
        return Snooze(3600)


class DiscardIt(Worker[None], queue=QUEUE):
    def perform(self, job: Job) -> Discard:
        return Discard("the demo discards this job")


class CancelIt(Worker[None], queue=QUEUE):
    def perform(self, job: Job) -> Cancel:
        return Cancel("the demo cancels this job")


class Explode(Worker[None], queue=QUEUE, max_attempts=1):
    def perform(self, job: Job) -> None:
        raise RuntimeError("the demo job failed on purpose")


class HugeResult(Worker[bytes], queue=QUEUE):
    """Return 64 KiB of random bytes, which no compression brings under 8 KiB."""

    def perform(self, job: Job) -> bytes:
        return os.urandom(64 * 1024)


class SlowEcho(Worker[str], queue=QUEUE):
    """Wait args["seconds"], then return args["text"]."""

    def perform(self, job: Job) -> str:
        threading.Event().wait(float(job.args["seconds"]))
        return str(job.args["text"])
