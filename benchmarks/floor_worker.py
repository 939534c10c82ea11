"""The floor's worker process: one listening thread and N worker connections.

Run as `python -m benchmarks.floor_worker --dsn DSN --schema SCHEMA`. It prints
`ready` once every connection is open and stops on SIGTERM, SIGINT or the end
of stdin. The listening thread hands each insert notification to one idle
worker, so an insert wakes one connection, not all of them. A woken worker
claims and completes jobs, one transaction each (two with `--durable-claims`),
until none is left.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections import deque
from types import FrameType
from typing import Any

import psycopg
from psycopg import sql

from benchmarks.floor import CLAIM, COMPLETE, insert_channel, statement
from benchmarks.processes import stop_when_parent_exits

logger = logging.getLogger("benchmarks.floor_worker")

LISTEN_SLICE_SECONDS = 0.2
# An idle worker also claims this often without a wake-up. A lost notification
# then shows as a slow round trip in the results, not as a hang.
IDLE_POLL_SECONDS = 1.0


class Dispatcher:
    """Hands wake-ups to idle workers, one worker per notification."""

    def __init__(self, workers: int) -> None:
        self._lock = threading.Lock()
        self._idle: deque[threading.Event] = deque()
        self._workers = workers
        # Wake-ups that came while every worker was busy. A busy worker claims
        # again before it goes idle, so more than one per worker is never needed.
        self._missed = 0

    def wake_one(self) -> None:
        with self._lock:
            if self._idle:
                self._idle.popleft().set()
            else:
                self._missed = min(self._missed + 1, self._workers)

    def go_idle(self, event: threading.Event) -> bool:
        """Register a worker whose claim found nothing; return True if it must claim again.

        A notification that came after that claim started, while the worker was
        not yet idle, is owed to it: without this check that job would wait for
        the next wake-up.
        """
        with self._lock:
            if self._missed:
                self._missed -= 1
                return True
            event.clear()
            self._idle.append(event)
            return False

    def leave(self, event: threading.Event) -> None:
        """Take a worker that woke up by its poll timeout off the idle list."""
        with self._lock:
            if event in self._idle:
                self._idle.remove(event)


class FloorWorker(threading.Thread):
    def __init__(
        self,
        conn: psycopg.Connection[Any],
        schema: str,
        dispatcher: Dispatcher,
        stop: threading.Event,
        durable_claims: bool = False,
    ) -> None:
        super().__init__(name="floor-worker", daemon=True)
        self._conn = conn
        self._durable_claims = durable_claims
        self._claim = statement(CLAIM, schema)
        self._complete = statement(COMPLETE, schema)
        self._dispatcher = dispatcher
        self._stopping = stop
        self._wake = threading.Event()
        self._wake.set()  # claim once at start: jobs may be waiting already
        self.completed = 0

    def wake(self) -> None:
        """Wake the worker at once, so that it handles a stop request without its poll delay."""
        self._wake.set()

    def run(self) -> None:
        try:
            while not self._stopping.is_set():
                if not self._wake.wait(IDLE_POLL_SECONDS):
                    self._dispatcher.leave(self._wake)
                if self._stopping.is_set():
                    break
                self._drain()
                while self._dispatcher.go_idle(self._wake):
                    self._drain()
        except psycopg.Error as error:
            logger.error("floor worker failed: %s", error)
            self._stopping.set()

    def _drain(self) -> None:
        while not self._stopping.is_set() and self._run_one():
            self.completed += 1

    def _run_one(self) -> bool:
        """Claim one job, run it and complete it; return False if none.

        Claim and completion share one transaction, so psycopg sends BEGIN,
        the claim, the completion and COMMIT: four round trips and one WAL
        flush. With durable claims the connection is in autocommit mode and
        each statement commits on its own: two round trips and two flushes,
        the claim's commit and the completion's, as on relay_actors' durable
        worker.
        """
        # Plain statements: psycopg's pipeline mode saves two round trips here but
        # cost more CPU per job in a trial on 2 cores, and CPU is the tighter limit.
        conn = self._conn
        row = conn.execute(self._claim).fetchone()
        if row is None:
            if not self._durable_claims:
                conn.rollback()
            return False
        job_id, arg, reply = row
        result = perform(arg)
        payload = f"{job_id}:{result}"
        conn.execute(
            self._complete, {"id": job_id, "result": result, "reply": reply, "payload": payload}
        )
        if not self._durable_claims:
            conn.commit()
        return True


def perform(arg: int) -> int:
    """The job: return its argument, as the relay_actors side's Echo worker does."""
    return arg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.floor_worker", description=__doc__)
    parser.add_argument("--dsn", required=True, help="PostgreSQL DSN")
    parser.add_argument("--schema", required=True, help="schema of the floor_jobs table")
    parser.add_argument(
        "--connections", type=int, default=10, help="worker connections (default 10)"
    )
    parser.add_argument(
        "--application-name",
        default="relay_actors_bench floor",
        help="application_name of every connection, as pg_stat_activity shows it",
    )
    parser.add_argument(
        "--durable-claims",
        action="store_true",
        help=(
            "commit each claim before running its job, with each statement in its own "
            "transaction (one more WAL flush and two fewer round trips per job)"
        ),
    )
    parser.add_argument(
        "--relay-statements",
        action="store_true",
        help=(
            "claim and record with relay_actors' statements on its jobs table "
            "(benchmarks.statement_floor); give with --durable-claims"
        ),
    )
    args = parser.parse_args(argv)
    if args.connections < 1:
        parser.error(f"invalid --connections {args.connections}: give at least 1")
    if args.relay_statements and not args.durable_claims:
        parser.error("--relay-statements needs --durable-claims: relay_actors commits its claims")
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    stop_when_parent_exits()

    def open_connection(autocommit: bool) -> psycopg.Connection[Any]:
        return psycopg.connect(
            args.dsn, autocommit=autocommit, application_name=args.application_name
        )

    worker_class = FloorWorker
    channel = insert_channel(args.schema)
    if args.relay_statements:
        # Imported here: statement_floor imports this module's FloorWorker.
        from benchmarks.statement_floor import StatementFloorWorker, relay_insert_channel

        worker_class = StatementFloorWorker
        channel = relay_insert_channel(args.schema)
    dispatcher = Dispatcher(args.connections)
    connections: list[psycopg.Connection[Any]] = []
    try:
        listen = open_connection(True)
        connections.append(listen)
        listen.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        workers = []
        for _ in range(args.connections):
            conn = open_connection(args.durable_claims)
            connections.append(conn)
            workers.append(
                worker_class(
                    conn, args.schema, dispatcher, stop, durable_claims=args.durable_claims
                )
            )
        for worker in workers:
            worker.start()
        print("ready", flush=True)
        while not stop.is_set():
            for _ in listen.notifies(timeout=LISTEN_SLICE_SECONDS):
                dispatcher.wake_one()
        for worker in workers:
            worker.wake()
        for worker in workers:
            worker.join(timeout=5.0)
    finally:
        stop.set()
        for conn in connections:
            conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
