"""Retry delays: the default backoff between failed attempts."""

from __future__ import annotations

import random

BASE_DELAY_SECONDS = 15.0
MAX_EXPONENT = 20
JITTER_FRACTION = 0.1


def default_backoff(attempt: int) -> float:
    """Return the delay in seconds before retrying after failed attempt `attempt`.

    As Oban's default: 15 s plus 2 to the power of the attempt, plus up to 10 %
    positive jitter so that jobs failing together do not retry together. The
    exponent is capped at 20 (about 12 days).
    """
    delay = BASE_DELAY_SECONDS + 2.0 ** min(max(attempt, 1), MAX_EXPONENT)
    return delay * (1.0 + random.uniform(0.0, JITTER_FRACTION))
