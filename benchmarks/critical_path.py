"""Timeline of a lone round trip's steps: `python -m benchmarks.critical_path [--dsn DSN]`.

Runs sequential round trips of a no-op job with a worker node in another
process, as the latency workload does. It records when each step of every
round trip happens in both processes: the caller's insert, the worker's
listener, producer, claim, executor and outcome statement, then the caller's
listener and await. It prints the median time of each step since `async_` was
called, and the median duration of each statement. With `--floor`, it traces
the hand-written floor's round trips instead (see benchmarks.floor_trace).

This is a diagnostic, not a benchmark figure, because it wraps internal
methods of relay_actors to record the steps. That adds a few microseconds to
each, so its total is a little above the benchmark's p50. Both processes read
`time.perf_counter_ns()`, which is CLOCK_MONOTONIC on Linux and so shared by
the processes of one machine.
"""

from __future__ import annotations

import argparse
import atexit
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

import relay_actors
from benchmarks import relay_bench
from benchmarks.processes import start_child, stop_when_parent_exits
from benchmarks.server import database, fresh_schema
from benchmarks.workers import Echo
from relay_actors import Ok, Relay
from relay_actors.actors.executor import ExecutorActor
from relay_actors.actors.listener import ListenerActor
from relay_actors.actors.producer import ProducerActor
from relay_actors.cli import main as run_cli
from relay_actors.store.statements import statements_for

Event = tuple[str, int]

# The first argument of a traced worker node's command line.
NODE_MODE = "--traced-node"
START = "caller: async_ called"
END = "caller: await_ returned"
# Producer messages whose arrival is a step. Ticks and other messages are not.
PRODUCER_STEPS = {"Wake", "Claim", "ExecutorIdle"}


class Recorder:
    """Events of one process as (step, perf_counter_ns) pairs.

    Any thread may mark a step, because list.append is atomic in CPython.
    """

    def __init__(self) -> None:
        self.events: list[Event] = []

    def mark(self, step: str) -> None:
        self.events.append((step, time.perf_counter_ns()))

    def record(self, step: str, ns: int) -> None:
        """Add a step that happened at `ns`, read earlier from `time.perf_counter_ns()`."""
        self.events.append((step, ns))

    def dump(self, path: Path) -> None:
        path.write_text(json.dumps(self.events))


def install(recorder: Recorder, schema: str, role: str) -> None:
    """Wrap the methods of relay_actors whose calls are the steps of a round trip.

    `role` ("caller" or "worker") prefixes the listener's and the statements' steps.
    """
    statements = statements_for(schema)
    names = {
        statements.insert: "insert",
        statements.insert_one: "insert",
        statements.claim: "claim",
        statements.record_one: "outcome",
        statements.record_completed: "outcome",
        statements.record: "outcome",
        statements.record_one_and_claim: "outcome and claim",
        statements.record_completed_and_claim: "outcome and claim",
        statements.record_and_claim: "outcome and claim",
    }
    mark = recorder.mark

    execute = psycopg.Connection.execute

    def traced_execute(self: psycopg.Connection[Any], query: Any, *args: Any, **kwargs: Any) -> Any:
        name = names.get(query) if isinstance(query, bytes) else None
        if name is None:
            return execute(self, query, *args, **kwargs)
        mark(f"{role}: {name} statement sent")
        try:
            return execute(self, query, *args, **kwargs)
        finally:
            mark(f"{role}: {name} statement returned")

    psycopg.Connection.execute = traced_execute  # type: ignore[method-assign]

    dispatch = ListenerActor._dispatch

    def traced_dispatch(self: ListenerActor, channel: str, payload: str) -> None:
        kinds = {self._relay_channel: "result", self._insert_channel: "insert"}
        kind = kinds.get(channel, "control")
        mark(f"{role} listener: {kind} notification")
        dispatch(self, channel, payload)

    ListenerActor._dispatch = traced_dispatch  # type: ignore[method-assign]

    resolve = ListenerActor._resolve_waiting

    def traced_resolve(self: ListenerActor, entry: Any) -> None:
        resolve(self, entry)
        mark(f"{role} listener: waiting future resolved")

    ListenerActor._resolve_waiting = traced_resolve  # type: ignore[method-assign]

    _wrap_receive(ProducerActor, "producer", mark, PRODUCER_STEPS)
    _wrap_receive(ExecutorActor, "executor", mark, {"Execute"})

    hand_on = ExecutorActor._hand_on

    def traced_hand_on(self: ExecutorActor, outcome: Any) -> None:
        mark("executor: outcome handed on")
        hand_on(self, outcome)

    ExecutorActor._hand_on = traced_hand_on  # type: ignore[method-assign]


def _wrap_receive(
    actor_class: type[Any], name: str, mark: Callable[[str], None], steps: set[str]
) -> None:
    receive = actor_class.on_receive

    def traced_receive(self: Any, message: Any) -> Any:
        kind = type(message).__name__
        if kind in steps:
            mark(f"{name}: {kind} received")
        return receive(self, message)

    actor_class.on_receive = traced_receive


def split_rounds(events: list[Event], start: str = START, end: str = END) -> list[list[Event]]:
    """Return the events of each round, from a `start` step to the next `end`, in time order.

    A step seen twice in a round gets " (2)" appended. Events outside rounds are dropped.
    """
    rounds: list[list[Event]] = []
    current: list[Event] | None = None
    for step, ns in sorted(events, key=lambda event: event[1]):
        if step == start:
            current = [(step, ns)]
        elif current is not None:
            current.append((step, ns))
            if step == end:
                rounds.append(_numbered(current))
                current = None
    return rounds


def timeline(rounds: list[list[Event]]) -> list[tuple[str, float, int]]:
    """Return (step, median microseconds from the round's start, rounds that had it) of each step.

    Steps that most rounds lack, such as a heartbeat's statement, are left
    out. Steps are ordered by their median time, so neighbouring rows may
    come from different processes.
    """
    offsets: dict[str, list[float]] = {}
    for found in rounds:
        started = found[0][1]
        for step, ns in found:
            offsets.setdefault(step, []).append((ns - started) / 1000)
    steps = [
        (step, statistics.median(values), len(values))
        for step, values in offsets.items()
        if len(values) >= len(rounds) / 2
    ]
    return sorted(steps, key=lambda step: step[1])


def statement_times(rounds: list[list[Event]]) -> list[tuple[str, float, int]]:
    """Return (statement, median microseconds from sent to returned, rounds that had it)."""
    durations: dict[str, list[float]] = {}
    for found in rounds:
        times = dict(found)
        for step, ns in found:
            name, sent, number = step.partition(" statement sent")
            returned = times.get(f"{name} statement returned{number}")
            # A statement sent in one round and returned in the next has no duration here.
            if sent and returned is not None and returned >= ns:
                durations.setdefault(name + number, []).append((returned - ns) / 1000)
    return [
        (name, statistics.median(values), len(values))
        for name, values in durations.items()
        if len(values) >= len(rounds) / 2
    ]


def _numbered(found: list[Event]) -> list[Event]:
    seen: Counter[str] = Counter()
    numbered = []
    for step, ns in found:
        seen[step] += 1
        numbered.append((step if seen[step] == 1 else f"{step} ({seen[step]})", ns))
    return numbered


def format_report(rounds: list[list[Event]], header: str, origin: str = "async_") -> str:
    """Return the step and statement tables; `origin` names the first step's call."""
    lines = [
        header,
        "",
        f"| step | µs since {origin} | µs after the row above | round trips with the step |",
        "| --- | ---: | ---: | ---: |",
    ]
    previous = 0.0
    for step, offset, count in timeline(rounds):
        lines.append(f"| {step} | {offset:,.0f} | {offset - previous:,.0f} | {count} |")
        previous = offset
    lines += [
        "",
        "| statement | µs from sent to returned | round trips with the statement |",
        "| --- | ---: | ---: |",
    ]
    for name, duration, count in statement_times(rounds):
        lines.append(f"| {name} | {duration:,.0f} | {count} |")
    return "\n".join(lines)


def run_node(trace: Path, schema: str, arguments: list[str]) -> int:
    """Run a traced worker node, which writes its steps to `trace` when it exits."""
    recorder = Recorder()
    install(recorder, schema, "worker")
    atexit.register(recorder.dump, trace)
    stop_when_parent_exits()
    return run_cli(["--log-level", "WARNING", "worker", *arguments])


@contextmanager
def traced_node(dsn: str, schema: str, trace: Path) -> Iterator[None]:
    arguments = relay_bench.worker_node_arguments(dsn, schema)[1:]
    child = start_child(
        "traced relay_actors worker node",
        ["benchmarks.critical_path", NODE_MODE, str(trace), schema, *arguments],
    )
    try:
        yield
    finally:
        child.stop()


def measure(dsn: str, rounds: int, warmup: int) -> list[Event]:
    """Time `warmup + rounds` round trips and return both processes' events of the last `rounds`."""
    recorder = Recorder()
    with fresh_schema(dsn) as schema, tempfile.TemporaryDirectory() as directory:
        trace = Path(directory) / "worker.json"
        install(recorder, schema, "caller")
        with (
            traced_node(dsn, schema, trace),
            relay_actors.start(
                name=relay_bench.INSTANCE,
                dsn=dsn,
                queues={},
                plugins=[Relay],
                prefix=schema,
                node=relay_bench.CALLER_NODE_NAME,
            ),
        ):
            for n in range(warmup + rounds):
                if n == warmup:
                    recorder.events.clear()
                recorder.mark(START)
                relay = Relay.async_(relay_bench.INSTANCE, Echo.new({"n": n}))
                recorder.mark("caller: async_ returned")
                result = Relay.await_(relay, timeout=relay_bench.LATENCY_TIMEOUT_SECONDS)
                recorder.mark(END)
                if result != Ok(n):
                    raise RuntimeError(f"job n={n}: expected Ok({n}), got {result!r:.300}")
        worker_events = [(step, ns) for step, ns in json.loads(trace.read_text())]
    return recorder.events + worker_events


def main(argv: list[str] | None = None) -> int:
    # Imported here because floor_trace imports this module's Recorder.
    from benchmarks import floor_trace

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [NODE_MODE]:
        # Started by traced_node: the trace file, the schema, then `worker` arguments.
        return run_node(Path(argv[1]), argv[2], argv[3:])
    if argv[:1] == [floor_trace.WORKER_MODE]:
        # Started by floor_trace.traced_worker: the trace file, then floor worker arguments.
        return floor_trace.run_worker(Path(argv[1]), argv[2:])

    parser = argparse.ArgumentParser(prog="python -m benchmarks.critical_path", description=__doc__)
    parser.add_argument(
        "--dsn",
        help="PostgreSQL server; a schema bench_<hex> is created and dropped on it "
        "(default $RELAY_ACTORS_DSN, else an embedded server started and stopped here)",
    )
    parser.add_argument("--rounds", type=int, default=500, help="timed round trips (default 500)")
    parser.add_argument(
        "--warmup", type=int, default=100, help="untimed round trips before those (default 100)"
    )
    parser.add_argument(
        "--relaxed-outcomes",
        action="store_true",
        help="start the worker node with --relaxed-outcomes",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="trace the floor (benchmarks.floor) instead of relay_actors",
    )
    parser.add_argument(
        "--durable-claims",
        action="store_true",
        help="with --floor: commit each claim before running its job, as relay_actors does",
    )
    parser.add_argument(
        "--events",
        type=Path,
        help="also write every recorded (step, perf_counter_ns) event to this JSON file",
    )
    args = parser.parse_args(argv)

    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, not {args.rounds}")
    if args.warmup < 0:
        parser.error(f"--warmup must be at least 0, not {args.warmup}")
    if args.floor and args.relaxed_outcomes:
        parser.error("--relaxed-outcomes applies to relay_actors, not to --floor")
    if args.durable_claims and not args.floor:
        parser.error("--durable-claims applies to --floor only")
    if args.relaxed_outcomes:
        relay_bench.NODE_OPTIONS.append("--relaxed-outcomes")

    with database(args.dsn) as (dsn, kind):
        if args.floor:
            events = floor_trace.measure(dsn, args.rounds, args.warmup, args.durable_claims)
        else:
            events = measure(dsn, args.rounds, args.warmup)
    if args.events is not None:
        args.events.write_text(json.dumps(sorted(events, key=lambda event: event[1])))

    if args.floor:
        rounds = split_rounds(events, floor_trace.START, floor_trace.END)
        if args.durable_claims:
            mode = "claims committed first"
        else:
            mode = "claim and completion in one transaction"
        origin = "the insert"
    else:
        rounds = split_rounds(events)
        mode = "relaxed outcomes" if args.relaxed_outcomes else "durable"
        origin = "async_"
    header = (
        f"medians of {len(rounds)} round trips after {args.warmup} untimed ones; "
        f"server: {kind}; {'floor worker' if args.floor else 'worker'} commits: {mode}"
    )
    print(format_report(rounds, header, origin))
    return 0


if __name__ == "__main__":
    sys.exit(main())
