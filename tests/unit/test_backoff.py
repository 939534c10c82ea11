"""Retry delays: the default backoff, the bound on a worker's own, Snooze's limits and the
acker's delay after an unwritable outcome."""

from __future__ import annotations

import math

import pytest

from relay_actors import Snooze
from relay_actors.actors.acker import fallback_delay
from relay_actors.actors.messages import AttemptOutcome
from relay_actors.backoff import (
    BASE_DELAY_SECONDS,
    JITTER_FRACTION,
    MAX_DELAY_SECONDS,
    bounded_delay,
    default_backoff,
)


@pytest.mark.parametrize("attempt", [1, 2, 5, 20, 100])
def test_default_backoff_within_jitter(attempt: int) -> None:
    base = BASE_DELAY_SECONDS + 2.0 ** min(attempt, 20)
    assert base <= default_backoff(attempt) <= base * (1 + JITTER_FRACTION)


@pytest.mark.parametrize(
    ("delay", "expected"),
    [(0.0, 0.0), (2.5, 2.5), (-3.0, 0.0), (1e15, MAX_DELAY_SECONDS), (math.inf, MAX_DELAY_SECONDS)],
)
def test_bounded_delay_clamps(delay: float, expected: float) -> None:
    assert bounded_delay(delay) == expected


def test_bounded_delay_rejects_nan() -> None:
    assert bounded_delay(math.nan) is None


def test_snooze_up_to_a_year() -> None:
    assert Snooze(MAX_DELAY_SECONDS).seconds == MAX_DELAY_SECONDS


@pytest.mark.parametrize("seconds", [-1.0, MAX_DELAY_SECONDS + 1, math.inf, math.nan])
def test_snooze_out_of_range_rejected(seconds: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 31536000"):
        Snooze(seconds)


@pytest.mark.parametrize("state", ["available", "completed", "scheduled", "cancelled"])
def test_fallback_waits_default_backoff(state: str) -> None:
    """A failed attempt that replaces an unwritable outcome waits, even after a rescue."""
    outcome = AttemptOutcome(job_id=1, attempt=2, state=state, status="ok", delay=0.0)
    base = BASE_DELAY_SECONDS + 2.0**2
    assert base <= fallback_delay(outcome) <= base * (1 + JITTER_FRACTION)


def test_fallback_keeps_worker_backoff() -> None:
    outcome = AttemptOutcome(job_id=1, attempt=2, state="retryable", status="error", delay=3.5)
    assert fallback_delay(outcome) == 3.5
