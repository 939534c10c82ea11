"""`ClaimAudit`: finds jobs that a node claimed but that none of its executors runs.

A claim can commit on the server while its reply is lost, for example when the
connection drops at that moment. Returning prefetched jobs to the queue can
fail too. Either way, jobs stay `executing` under a node that goes on
heartbeating, so no lifeline rescues them, and their callers wait until they
time out. A producer therefore reads, every audit period, which of its queue's
executing jobs on this node it does not account for.

The producer counts as accounted for its running attempts, its prefetched jobs
and every outcome of this node that is not written yet (`UnrecordedOutcomes`).
One reading is still not proof: the claim of a job and its row can change
between the moment the producer lists what it accounts for and the reading.
So a job is adopted only if two readings one period apart both find the same
attempt of it unaccounted. The period is `rescue_after` (60 s by default).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

Row = tuple[Any, ...]

# Columns 0 and 6 of a claimed row: the job's id and its attempt.
_ID_COLUMN = 0
_ATTEMPT_COLUMN = 6


class ClaimAudit:
    """Decides which unaccounted jobs of a queue to adopt, reading by reading."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._next = time.monotonic() + interval
        self._suspects: set[tuple[int, int]] = set()

    def due(self, now: float) -> bool:
        return now >= self._next

    def fail(self, now: float) -> None:
        """Note a reading that failed: the next is one period away and starts afresh."""
        self._next = now + self._interval
        self._suspects = set()

    def confirm(self, rows: Sequence[Row], now: float) -> list[Row]:
        """Take one reading of unaccounted rows; return those found in the previous one too.

        Rows have the columns of a claim. The others are remembered for the next reading.
        """
        self._next = now + self._interval
        adopted: list[Row] = []
        suspects: set[tuple[int, int]] = set()
        for row in rows:
            attempt = (row[_ID_COLUMN], row[_ATTEMPT_COLUMN])
            if attempt in self._suspects:
                adopted.append(row)
            else:
                suspects.add(attempt)
        self._suspects = suspects
        return adopted
