"""`ClaimAudit`: finds jobs that a node claimed but that none of its executors runs.

A claim can commit on the server while its reply is lost, for example when the
connection drops at that moment. Returning prefetched jobs to the queue can
fail too. Either way, jobs stay `executing` under a node that goes on
heartbeating, so no lifeline rescues them, and their callers wait until they
time out. A producer therefore reads, every audit period, which of its queue's
executing jobs on this node it does not account for.

One reading is not proof. An outcome that an executor has just handed on, or
that the acker is still writing, leaves its job executing and unaccounted for
a moment. So a job is adopted only if two readings one period apart both find
the same attempt of it unaccounted. Outcomes are written within seconds, even
after a database outage, and the period is `rescue_after` (60 s by default).
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
