"""The critical-path diagnostic's report: rounds, medians, repeated and rare steps."""

from __future__ import annotations

from benchmarks.critical_path import (
    END,
    START,
    format_report,
    split_rounds,
    statement_times,
    timeline,
)


def round_events(started: int, steps: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Return one round's events, each step `offset` microseconds after `started` ns."""
    events = [(START, started)]
    events += [(step, started + offset * 1000) for step, offset in steps]
    return events


def test_timeline_takes_medians_per_step() -> None:
    events = []
    for number, claim_at in enumerate([100, 300, 200]):
        events += round_events(number * 10**9, [("claim", claim_at), (END, 1000)])

    rounds = split_rounds(events)

    assert len(rounds) == 3
    assert timeline(rounds) == [(START, 0.0, 3), ("claim", 200.0, 3), (END, 1000.0, 3)]


def test_split_rounds_numbers_repeated_steps() -> None:
    events = round_events(0, [("claim", 100), ("claim", 400), (END, 500)])

    steps = [step for step, _ in split_rounds(events)[0]]

    assert steps == [START, "claim", "claim (2)", END]


def test_split_rounds_merges_processes_by_time() -> None:
    caller = round_events(0, [(END, 900)])
    worker = [("worker step", 500 * 1000)]

    steps = [step for step, _ in split_rounds(worker + caller)[0]]

    assert steps == [START, "worker step", END]


def test_split_rounds_drops_events_outside_rounds() -> None:
    events = [("before any round", 0), *round_events(10, [(END, 100)]), ("after", 10**9)]

    rounds = split_rounds(events)

    assert len(rounds) == 1
    assert [step for step, _ in rounds[0]] == [START, END]


def test_timeline_leaves_out_rare_steps() -> None:
    events = round_events(0, [("heartbeat", 50), (END, 100)])
    for number in range(1, 4):
        events += round_events(number * 10**9, [(END, 100)])

    steps = timeline(split_rounds(events))

    assert "heartbeat" not in [step for step, _, _ in steps]


def test_timeline_without_rounds_is_empty() -> None:
    assert split_rounds([("claim", 5)]) == []
    assert timeline([]) == []


def test_statement_times_pair_sent_and_returned() -> None:
    events = []
    for number, took in enumerate([300, 500, 400]):
        events += round_events(
            number * 10**9,
            [
                ("worker: claim statement sent", 100),
                ("caller: async_ returned", 150),
                ("worker: claim statement returned", 100 + took),
                ("worker: claim statement sent", 700),
                ("worker: claim statement returned", 750),
                (END, 1000),
            ],
        )

    times = statement_times(split_rounds(events))

    assert times == [("worker: claim", 400.0, 3), ("worker: claim (2)", 50.0, 3)]


def test_statement_times_skip_unreturned_statements() -> None:
    events = round_events(0, [("worker: outcome statement sent", 100), (END, 200)])

    assert statement_times(split_rounds(events)) == []


def test_statement_times_skip_statements_across_rounds() -> None:
    events = []
    for number in range(2):
        events += round_events(
            number * 10**9,
            [
                ("worker: empty claim statement returned", 50),
                ("worker: empty claim statement sent", 900),
                (END, 1000),
            ],
        )

    assert statement_times(split_rounds(events)) == []


def test_split_rounds_takes_other_start_and_end() -> None:
    events = [("insert called", 0), ("claim", 100_000), ("result received", 400_000)]
    events += [(START, 500_000), (END, 600_000)]

    rounds = split_rounds(events, "insert called", "result received")

    assert rounds == [events[:3]]


def test_format_report_names_its_origin() -> None:
    events = round_events(0, [(END, 100)])

    report = format_report(split_rounds(events), "header", "the insert")

    assert "| step | µs since the insert |" in report


def test_format_report_shows_both_tables() -> None:
    events = round_events(
        0,
        [
            ("worker: claim statement sent", 100),
            ("worker: claim statement returned", 350),
            (END, 1250),
        ],
    )

    report = format_report(split_rounds(events), "medians of 1 round trips")

    assert report.startswith("medians of 1 round trips\n")
    assert "| worker: claim statement returned | 350 | 250 | 1 |" in report
    assert f"| {END} | 1,250 | 900 | 1 |" in report
    assert "| worker: claim | 250 | 1 |" in report
