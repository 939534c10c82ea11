"""The critical-path diagnostic's timeline: rounds, medians, repeated and rare steps."""

from __future__ import annotations

from benchmarks.critical_path import END, START, format_timeline, timeline


def round_events(started: int, steps: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Return one round's events, each step `offset` microseconds after `started` ns."""
    events = [(START, started)]
    events += [(step, started + offset * 1000) for step, offset in steps]
    return events


def test_timeline_takes_medians_per_step() -> None:
    events = []
    for number, claim_at in enumerate([100, 300, 200]):
        events += round_events(number * 10**9, [("claim", claim_at), (END, 1000)])

    steps, rounds = timeline(events)

    assert rounds == 3
    assert steps == [(START, 0.0, 3), ("claim", 200.0, 3), (END, 1000.0, 3)]


def test_timeline_numbers_repeated_steps() -> None:
    events = round_events(0, [("claim", 100), ("claim", 400), (END, 500)])

    steps, _ = timeline(events)

    assert [step for step, _, _ in steps] == [START, "claim", "claim (2)", END]


def test_timeline_merges_processes_by_time() -> None:
    caller = round_events(0, [(END, 900)])
    worker = [("worker step", 500 * 1000)]

    steps, _ = timeline(worker + caller)

    assert [step for step, _, _ in steps] == [START, "worker step", END]


def test_timeline_leaves_out_rare_steps() -> None:
    events = round_events(0, [("heartbeat", 50), (END, 100)])
    for number in range(1, 4):
        events += round_events(number * 10**9, [(END, 100)])

    steps, rounds = timeline(events)

    assert rounds == 4
    assert "heartbeat" not in [step for step, _, _ in steps]


def test_timeline_ignores_events_outside_rounds() -> None:
    events = [("before any round", 0), *round_events(10, [(END, 100)]), ("after", 10**9)]

    steps, rounds = timeline(events)

    assert rounds == 1
    assert [step for step, _, _ in steps] == [START, END]


def test_timeline_without_rounds_is_empty() -> None:
    assert timeline([("claim", 5)]) == ([], 0)


def test_format_timeline_shows_step_differences() -> None:
    table = format_timeline([(START, 0.0, 2), ("claim", 250.0, 2), (END, 1250.0, 2)], 2)

    assert "medians of 2 round trips" in table
    assert "| claim | 250 | 250 | 2 |" in table
    assert f"| {END} | 1,250 | 1,000 | 2 |" in table
