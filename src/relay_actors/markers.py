"""Values a worker's `perform` returns to steer its job instead of completing it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from relay_actors.backoff import MAX_DELAY_SECONDS


@dataclass(frozen=True, slots=True)
class Snooze:
    """Reschedule the job `seconds` from now without using up an attempt."""

    seconds: float

    def __post_init__(self) -> None:
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, int | float):
            raise TypeError(f"Snooze seconds must be a number, got {self.seconds!r}")
        if not math.isfinite(self.seconds) or not 0 <= self.seconds <= MAX_DELAY_SECONDS:
            raise ValueError(
                f"Snooze seconds must be between 0 and {MAX_DELAY_SECONDS:.0f} (a year), "
                f"got {self.seconds!r}"
            )


def _check_reason(marker: str, reason: object) -> None:
    if not isinstance(reason, str):
        raise TypeError(f"{marker} reason must be a str, got {type(reason).__name__}")


@dataclass(frozen=True, slots=True)
class Cancel:
    """Stop the job for good as cancelled; `reason` is recorded on the row."""

    reason: str = ""

    def __post_init__(self) -> None:
        _check_reason("Cancel", self.reason)


@dataclass(frozen=True, slots=True)
class Discard:
    """Stop the job for good as discarded; `reason` is recorded on the row."""

    reason: str = ""

    def __post_init__(self) -> None:
        _check_reason("Discard", self.reason)
