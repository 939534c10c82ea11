"""The rule of `ClaimAudit`: adopt an attempt only when two readings in a row find it."""

from __future__ import annotations

from typing import Any

from relay_actors.actors.audit import ClaimAudit


def claimed_row(job_id: int, attempt: int) -> tuple[Any, ...]:
    """Return a row with the columns of a claim; only the id and the attempt matter here."""
    return (job_id, "q", "w", {}, {}, [], attempt, 20, 0, None, None, None, "node")


def test_audit_first_reading_adopts_nothing() -> None:
    audit = ClaimAudit(60.0)
    assert audit.confirm([claimed_row(1, 1), claimed_row(2, 1)], now=100.0) == []


def test_audit_adopts_found_twice() -> None:
    audit = ClaimAudit(60.0)
    audit.confirm([claimed_row(1, 1), claimed_row(2, 1)], now=100.0)
    adopted = audit.confirm([claimed_row(2, 1), claimed_row(3, 1)], now=160.0)
    assert [row[0] for row in adopted] == [2]
    # Job 3 was found once, so the next reading decides.
    assert [row[0] for row in audit.confirm([claimed_row(3, 1)], now=220.0)] == [3]


def test_audit_newer_attempt_starts_over() -> None:
    """The same job on another attempt was claimed again in between: it is a new suspect."""
    audit = ClaimAudit(60.0)
    audit.confirm([claimed_row(1, 1)], now=100.0)
    assert audit.confirm([claimed_row(1, 2)], now=160.0) == []
    assert [row[6] for row in audit.confirm([claimed_row(1, 2)], now=220.0)] == [2]


def test_audit_forgets_missing_job() -> None:
    """A job recorded between two readings is not adopted if an old row shows up again."""
    audit = ClaimAudit(60.0)
    audit.confirm([claimed_row(1, 1)], now=100.0)
    audit.confirm([], now=160.0)
    assert audit.confirm([claimed_row(1, 1)], now=220.0) == []


def test_audit_due_once_per_interval() -> None:
    audit = ClaimAudit(60.0)
    audit.confirm([], now=100.0)
    assert not audit.due(159.9)
    assert audit.due(160.0)


def test_audit_failed_reading_starts_over() -> None:
    """A reading after a failed one is compared with nothing, and comes one period later."""
    audit = ClaimAudit(60.0)
    audit.confirm([claimed_row(1, 1)], now=100.0)
    audit.fail(now=160.0)
    assert not audit.due(219.9)
    assert audit.confirm([claimed_row(1, 1)], now=220.0) == []
