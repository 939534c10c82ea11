"""The demo: file statistics of the standard library, computed on a worker node.

The demo starts a worker node in a separate OS process. Several caller threads
insert one job per source file of the standard library and await the results
with `await_` and `await_many`. Each result is checked against the same
computation done here. It then runs one job for each error result.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import sysconfig
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from relay_actors import Error, JobError, Ok, Reason, Relay, Worker, start
from relay_actors.demo import workers
from relay_actors.embedded import EmbeddedServer
from relay_actors.errors import ConfigurationError, RelayError
from relay_actors.store.connect import server_address

READY_TIMEOUT_SECONDS = 60.0
AWAIT_TIMEOUT_SECONDS = 30.0
BATCH_SIZE = 50
PROGRESS_INTERVAL_SECONDS = 0.5


def standard_library_files(limit: int | None) -> list[Path]:
    """Return the standard library's .py files, sorted, at most `limit` of them."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(
        path
        for path in root.rglob("*.py")
        if "site-packages" not in path.parts
        and "dist-packages" not in path.parts
        and path.is_file()
    )
    return files if limit is None else files[:limit]


@dataclass
class Tally:
    """Counts and latencies shared by the caller threads."""

    total: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    done: int = 0
    matched: int = 0
    mismatched: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    def add(
        self, path: Path, result: Ok[Any] | Error, expected: dict[str, Any], latency: float
    ) -> None:
        with self.lock:
            self.done += 1
            self.latencies.append(latency)
            self.kinds[result_kind(result)] += 1
            if isinstance(result, Ok) and result.value == expected:
                self.matched += 1
            else:
                self.mismatched.append(f"{path}: {result!r:.200}")


def result_kind(result: Ok[Any] | Error) -> str:
    """Return "ok", "exception" or the reason of a result, for the summary's counts."""
    if isinstance(result, Ok):
        return "ok"
    if isinstance(result.reason, JobError):
        return "exception"
    return result.reason.value


def _call_one_at_a_time(
    paths: list[Path], expected: dict[Path, dict[str, Any]], tally: Tally
) -> None:
    for path in paths:
        started = time.monotonic()
        relay = Relay.async_("demo", workers.FileStats.new({"path": str(path)}))
        result = Relay.await_(relay, timeout=AWAIT_TIMEOUT_SECONDS)
        tally.add(path, result, expected[path], time.monotonic() - started)


def _call_in_batches(paths: list[Path], expected: dict[Path, dict[str, Any]], tally: Tally) -> None:
    for first in range(0, len(paths), BATCH_SIZE):
        batch = paths[first : first + BATCH_SIZE]
        relays, started = [], []
        for path in batch:
            started.append(time.monotonic())
            relays.append(Relay.async_("demo", workers.FileStats.new({"path": str(path)})))
        results = Relay.await_many(relays, timeout=AWAIT_TIMEOUT_SECONDS)
        finished = time.monotonic()
        for path, result, began in zip(batch, results, started, strict=True):
            tally.add(path, result, expected[path], finished - began)


def _run_callers(files: list[Path], threads: int, tally: Tally) -> list[BaseException]:
    expected = {path: workers.file_stats(path.read_bytes()) for path in files}
    failures: list[BaseException] = []

    def call(index: int) -> None:
        paths = files[index::threads]
        try:
            if index % 2 == 0:
                _call_one_at_a_time(paths, expected, tally)
            else:
                _call_in_batches(paths, expected, tally)
        except BaseException as error:  # noqa: BLE001 - reported in the summary
            failures.append(error)

    callers = [
        threading.Thread(target=call, args=(i,), name=f"demo-caller-{i}") for i in range(threads)
    ]
    for caller in callers:
        caller.start()
    _show_progress(tally, callers)
    for caller in callers:
        caller.join()
    return failures


def _show_progress(tally: Tally, callers: list[threading.Thread]) -> None:
    interactive = sys.stderr.isatty()
    reported = -1
    while any(caller.is_alive() for caller in callers):
        time.sleep(PROGRESS_INTERVAL_SECONDS)
        done = tally.done
        tenth = done * 10 // max(tally.total, 1)
        if interactive:
            print(f"\rdemo: {done}/{tally.total} files", end="", file=sys.stderr, flush=True)
        elif tenth != reported:
            reported = tenth
            print(f"demo: {done}/{tally.total} files", file=sys.stderr, flush=True)
    if interactive:
        print(file=sys.stderr)


def _exercise_error_results(kinds: Counter[str]) -> dict[str, bool]:
    """Run one job per error result; count its kind and return whether each was as expected."""
    checks: dict[str, bool] = {}
    simple: dict[str, tuple[type[Worker[Any]], Reason]] = {
        "snoozed": (workers.SnoozeOnce, Reason.SNOOZED),
        "discarded": (workers.DiscardIt, Reason.DISCARDED),
        "cancelled": (workers.CancelIt, Reason.CANCELLED),
        "result_too_large": (workers.HugeResult, Reason.RESULT_TOO_LARGE),
    }
    relays = {kind: Relay.async_("demo", worker.new({})) for kind, (worker, _) in simple.items()}
    failing = Relay.async_("demo", workers.Explode.new({}))
    for kind, (_, reason) in simple.items():
        result = Relay.await_(relays[kind], timeout=AWAIT_TIMEOUT_SECONDS)
        kinds[result_kind(result)] += 1
        checks[kind] = result == Error(reason)
    error = Relay.await_(failing, timeout=AWAIT_TIMEOUT_SECONDS)
    kinds[result_kind(error)] += 1
    checks["exception"] = (
        isinstance(error, Error)
        and isinstance(error.reason, JobError)
        and error.reason.type == "builtins.RuntimeError"
        and "on purpose" in error.reason.message
    )
    # The job outlives the first await's deadline; a second await gets its value.
    slow = Relay.async_("demo", workers.SlowEcho.new({"seconds": 1.0, "text": "late"}))
    first = Relay.await_(slow, timeout=0.2)
    second = Relay.await_(slow, timeout=AWAIT_TIMEOUT_SECONDS)
    # Only the first await counts: the second shows the job kept running.
    kinds[result_kind(first)] += 1
    checks["timeout"] = first == Error(Reason.TIMEOUT) and second == Ok("late")
    return checks


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _start_worker_node(dsn: str, prefix: str, executors: int) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "relay_actors",
        "--log-level",
        "WARNING",
        "worker",
        "--dsn",
        dsn,
        "--prefix",
        prefix,
        "--queue",
        f"{workers.QUEUE}={executors}",
        "--module",
        "relay_actors.demo.workers",
        "--node",
        "demo-worker",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    ready = threading.Event()

    def wait_ready() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("ready"):
                ready.set()
                return

    threading.Thread(target=wait_ready, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not ready.wait(0.1):
        if process.poll() is not None:
            raise RelayError(f"the demo's worker node exited with status {process.returncode}")
        if time.monotonic() > deadline:
            process.kill()
            raise RelayError(
                f"the demo's worker node was not ready after {READY_TIMEOUT_SECONDS} s"
            )
    return process


def _stop_worker_node(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; return 0 only if every result matched."""
    if args.jobs is not None and args.jobs < 1:
        print(f"demo: invalid --jobs {args.jobs}: give at least 1", file=sys.stderr)
        return 2
    if args.threads < 1 or args.executors < 1:
        print("demo: --threads and --executors must be at least 1", file=sys.stderr)
        return 2
    wall_started = time.monotonic()
    server = None
    dsn = args.dsn or os.environ.get("RELAY_ACTORS_DSN")
    if not dsn or dsn == "embedded":
        print("demo: starting an embedded PostgreSQL server", file=sys.stderr)
        try:
            server = EmbeddedServer()
        except ConfigurationError as error:
            print(f"demo: {error}; or pass --dsn to use your own server", file=sys.stderr)
            return 2
        dsn = server.dsn
    prefix = f"demo_{secrets.token_hex(4)}"
    if server is None:
        print(
            f"demo: using the server at {server_address(dsn)}, in schema {prefix}",
            file=sys.stderr,
        )
    node = None
    try:
        node = _start_worker_node(dsn, prefix, args.executors)
        with start(name="demo", dsn=dsn, queues={}, plugins=[Relay], prefix=prefix):
            files = standard_library_files(args.jobs)
            tally = Tally(total=len(files))
            print(f"demo: {len(files)} files, {args.threads} caller threads", file=sys.stderr)
            failures = _run_callers(files, args.threads, tally)
            checks = _exercise_error_results(tally.kinds)
    finally:
        if node is not None:
            _stop_worker_node(node)
        _drop_schema(dsn, prefix)
        if server is not None:
            server.stop()
    summary = {
        "jobs": tally.total,
        "ok": tally.matched,
        "mismatched": len(tally.mismatched),
        "caller_errors": len(failures),
        "results": dict(tally.kinds),
        "error_results": checks,
        "latency_ms": {
            "p50": round(_percentile(tally.latencies, 0.50) * 1000, 2),
            "p99": round(_percentile(tally.latencies, 0.99) * 1000, 2),
        },
        "wall_seconds": round(time.monotonic() - wall_started, 2),
    }
    passed = tally.matched == tally.total and not failures and all(checks.values())
    summary["passed"] = passed
    for line in tally.mismatched[:10]:
        print(f"demo: mismatch: {line}", file=sys.stderr)
    for failure in failures:
        print(f"demo: caller thread failed: {failure!r}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary))
    else:
        counts = ", ".join(f"{kind} {count}" for kind, count in sorted(tally.kinds.items()))
        wrong = [kind for kind, good in checks.items() if not good]
        p50 = _percentile(tally.latencies, 0.5) * 1000
        p99 = _percentile(tally.latencies, 0.99) * 1000
        latency = f"p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        verdict = "passed" if passed else "FAILED"
        print(
            f"demo: {verdict}: {tally.matched}/{tally.total} files matched, "
            f"{len(failures)} caller errors; results: {counts}; "
            f"unexpected error results: {', '.join(wrong) or 'none'}; "
            f"insert-to-result latency {latency}; wall {summary['wall_seconds']} s"
        )
    return 0 if passed else 1


def _drop_schema(dsn: str, prefix: str) -> None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(prefix)))
    except psycopg.Error as error:
        print(f"demo: could not drop schema {prefix}: {error}", file=sys.stderr)
