"""Percentiles and medians of the measured figures."""

from __future__ import annotations

import math
import statistics
import threading
from collections.abc import Sequence


def percentile(values: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of `values` (fraction 0.5 for p50)."""
    if not values:
        raise ValueError("percentile of an empty list")
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """Return p50, p90, p99 and max of round-trip times, in milliseconds."""
    return {
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p90_ms": percentile(seconds, 0.90) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
        "max_ms": max(seconds) * 1000,
    }


def median_or_none(values: Sequence[float | None]) -> float | None:
    """Return the median of the values that are not None, or None if there are none."""
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """Return numerator / denominator, or None if either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


class Failures:
    """Thread-safe count of results that were not the expected value, with a few examples."""

    MAX_EXAMPLES = 5

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.examples: list[str] = []

    def add(self, message: str) -> None:
        with self._lock:
            self.count += 1
            if len(self.examples) < self.MAX_EXAMPLES:
                self.examples.append(message)

    def as_dict(self) -> dict[str, object]:
        return {"count": self.count, "examples": list(self.examples)}
