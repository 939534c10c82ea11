"""Inserting jobs, with concurrent inserts from caller threads combined into one statement."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from relay_actors.job import Job
from relay_actors.store.connect import ConnectionPool
from relay_actors.store.statements import Statements

Row = tuple[Any, ...]


def execute_insert(
    statements: Statements,
    channel: str,
    conn: psycopg.Connection[Any],
    jobs: list[Job],
    metas: list[dict[str, Any]],
) -> list[Row]:
    """Insert the jobs; return (id, state, inserted_at, scheduled_at) per job, in input order.

    Rows are matched to jobs by the relay ref in each job's meta, so every job
    of a batch of two or more needs one. A batch of one needs none.
    """
    documents = [
        {
            "queue": job.queue,
            "worker": job.worker,
            "args": job.args,
            "meta": meta,
            "tags": list(job.tags),
            "max_attempts": job.max_attempts,
            "priority": job.priority,
            "scheduled_at": None if job.scheduled_at is None else job.scheduled_at.isoformat(),
        }
        for job, meta in zip(jobs, metas, strict=True)
    ]
    params = {"jobs": Jsonb(documents), "channel": channel}
    rows = conn.execute(statements.insert, params).fetchall()
    if len(jobs) == 1:
        return [rows[0][:4]]
    by_ref = {row[4]: row[:4] for row in rows}
    return [by_ref[meta["relay"]["ref"]] for meta in metas]


class _Request:
    __slots__ = ("done", "error", "jobs", "lead", "metas", "rows")

    def __init__(self, jobs: list[Job], metas: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        self.metas = metas
        self.rows: list[Row] = []
        self.error: BaseException | None = None
        self.lead = False
        self.done = threading.Event()


class InsertCombiner:
    """Combines inserts that caller threads make at the same time into one statement.

    Each commit of an insert costs a WAL flush, so jobs that share a statement
    share the flush. A lone caller inserts at once on its own thread. When
    others arrive while an insert runs, they wait, and the next of them
    inserts every job that queued up meanwhile in one statement and one
    transaction. If that statement fails, every caller in it gets the error
    and none of its jobs is inserted.
    """

    def __init__(self, pool: ConnectionPool, statements: Statements, channel: str) -> None:
        self._pool = pool
        self._statements = statements
        self._channel = channel
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._busy = False
        self.statements_run = 0
        self.jobs_inserted = 0

    def insert(self, jobs: list[Job], metas: list[dict[str, Any]]) -> list[Row]:
        """Insert the jobs, possibly together with other threads' jobs; return their rows."""
        request = _Request(jobs, metas)
        with self._lock:
            self._waiting.append(request)
            lead = not self._busy
            self._busy = True
        if not lead:
            try:
                request.done.wait()
            except BaseException:
                self._abandon(request)
                raise
            if not request.lead:
                return _result(request)
        self._run_batch()
        request.done.wait()
        return _result(request)

    def _run_batch(self) -> None:
        with self._lock:
            batch, self._waiting = self._waiting, []
        jobs = [job for request in batch for job in request.jobs]
        metas = [meta for request in batch for meta in request.metas]
        try:
            with self._pool.connection() as conn:
                rows = execute_insert(self._statements, self._channel, conn, jobs, metas)
        except BaseException as error:  # noqa: BLE001 - handed to every caller in the batch
            for request in batch:
                request.error = error
        else:
            self.statements_run += 1
            self.jobs_inserted += len(jobs)
            start = 0
            for request in batch:
                request.rows = rows[start : start + len(request.jobs)]
                start += len(request.jobs)
        self._hand_over()
        for request in batch:
            request.lead = False
            request.done.set()

    def _hand_over(self) -> None:
        """Make the first waiting caller run the next batch, or mark the combiner idle."""
        with self._lock:
            if not self._waiting:
                self._busy = False
                return
            successor = self._waiting[0]
            successor.lead = True
        successor.done.set()

    def _abandon(self, request: _Request) -> None:
        """Withdraw a request whose caller was interrupted while it waited.

        A request not yet taken into a batch is removed. One that was made the
        next leader runs its batch first, so that the callers queued behind it
        are not left waiting forever.
        """
        with self._lock:
            waiting = request in self._waiting and not request.lead
            if waiting:
                self._waiting.remove(request)
        if not waiting and request.lead:
            self._run_batch()


def _result(request: _Request) -> list[Row]:
    if request.error is not None:
        raise request.error
    return request.rows
