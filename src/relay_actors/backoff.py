"""Retry delays: the default backoff between failed attempts."""

from __future__ import annotations

import math
import random

BASE_DELAY_SECONDS = 15.0
MAX_EXPONENT = 20
# Maximum retry delay that relay_actors writes: a year. A far larger one, such
# as 1e15 s, puts the job's scheduled time out of PostgreSQL's range, so the
# row could not store the attempt's outcome at all.
MAX_DELAY_SECONDS = 365 * 24 * 3600.0
JITTER_FRACTION = 0.1


def default_backoff(attempt: int) -> float:
    """Return the delay in seconds before retrying after failed attempt `attempt`.

    As Oban's default: 15 s plus 2 to the power of the attempt, plus up to 10 %
    positive jitter so that jobs failing together do not retry together. The
    exponent is capped at 20 (about 12 days).
    """
    delay = BASE_DELAY_SECONDS + 2.0 ** min(max(attempt, 1), MAX_EXPONENT)
    return delay * (1.0 + random.uniform(0.0, JITTER_FRACTION))


def bounded_delay(delay: float) -> float | None:
    """Return `delay` within 0 to MAX_DELAY_SECONDS, or None if it is not a number (NaN)."""
    if math.isnan(delay):
        return None
    return min(max(delay, 0.0), MAX_DELAY_SECONDS)
