"""Inserting jobs, with concurrent inserts from caller threads combined into one statement."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from relay_actors.job import Job, json_text
from relay_actors.store.connect import ConnectionPool
from relay_actors.store.statements import Statements

Row = tuple[Any, ...]

# Maximum time a batch waits for the callers that shared the previous batch.
# With 4 caller threads on 2 cores, a caller took about 0.15 ms of Python to
# reach its next insert, and a statement 0.4 to 1 ms (measured).
GATHER_SECONDS = 0.0005
# Times a batch's last steps are run when interrupts keep hitting them.
FINISH_TRIES = 3


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
    if len(jobs) == 1:
        return [_insert_one(statements, channel, conn, jobs[0], metas[0])]
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
    by_ref = {row[4]: row[:4] for row in rows}
    return [by_ref[meta["relay"]["ref"]] for meta in metas]


def _insert_one(
    statements: Statements,
    channel: str,
    conn: psycopg.Connection[Any],
    job: Job,
    meta: dict[str, Any],
) -> Row:
    """Insert one job with the one-row statement.

    Returns (id, state, inserted_at, scheduled_at), as execute_insert does per job.
    """
    params = {
        "queue": job.queue,
        "worker": job.worker,
        "args": json_text(job.args),
        "meta": json_text(meta),
        "tags": list(job.tags),
        "max_attempts": job.max_attempts,
        "priority": job.priority,
        "scheduled_at": job.scheduled_at,
        "channel": channel,
    }
    row: Row | None = conn.execute(statements.insert_one, params).fetchone()
    assert row is not None  # an INSERT ... RETURNING of one row returns one row
    return row[:4]


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

    A batch waits up to `gather_seconds` until as many callers have queued as
    shared the previous batch. Callers that insert in a loop then keep
    sharing one statement, instead of splitting into a statement for those
    that queued during the last one and a late one for the rest. A caller
    that inserts alone does not wait, because its own batches hold one
    request. It waits once, for the window, when it comes alone right after
    a shared batch.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        statements: Statements,
        channel: str,
        gather_seconds: float = GATHER_SECONDS,
    ) -> None:
        self._pool = pool
        self._gather_seconds = gather_seconds
        self._statements = statements
        self._channel = channel
        self._lock = threading.Lock()
        self._waiting: list[_Request] = []
        self._busy = False
        # Requests that the next batch waits for: the size of the last batch.
        self._expected = 1
        # Set when a gathering leader has the requests it expects. The leader
        # waits on it without holding the lock, so an interrupt of that wait
        # never leaves the lock in a wrong state.
        self._gathered = threading.Event()
        self._gathering = False
        self.statements_run = 0
        self.jobs_inserted = 0

    def insert(self, jobs: list[Job], metas: list[dict[str, Any]]) -> list[Row]:
        """Insert the jobs, possibly together with other threads' jobs; return their rows."""
        # Each flag is set in the same locked block as the busy flag, and each
        # step after that block is inside a try. So an interrupt (Ctrl-C on
        # the main thread) right after the block still hands the combiner over.
        alone = False
        try:
            with self._lock:
                if not self._busy and self._expected == 1:
                    self._busy = True
                    alone = True
            if alone:
                return self._insert_alone(jobs, metas)
        finally:
            if alone:
                self._finish([], None)
        request = _Request(jobs, metas)
        lead = False
        try:
            with self._lock:
                lead = not self._busy
                self._busy = True
                self._waiting.append(request)
                if self._gathering and len(self._waiting) >= self._expected:
                    self._gathered.set()
            if not lead:
                request.done.wait()
        except BaseException:
            self._abandon(request, lead=lead)
            raise
        if not lead and not request.lead:
            return _result(request)
        try:
            self._run_batch()
        except BaseException:
            # Interrupted before its batch took the queued requests: this
            # one may still be queued, even as the next leader.
            self._abandon(request, lead=lead)
            raise
        request.done.wait()
        return _result(request)

    def _insert_alone(self, jobs: list[Job], metas: list[dict[str, Any]]) -> list[Row]:
        """Insert the jobs of a caller that found the combiner idle, as a batch of its own.

        A batch of one request needs no gathering and no request to
        wait on, which saves a lone caller those steps on every insert.
        Callers that queue meanwhile wait for the hand-over, as behind any
        batch. The caller hands over.
        """
        with self._pool.connection() as conn:
            rows = execute_insert(self._statements, self._channel, conn, jobs, metas)
        self.statements_run += 1
        self.jobs_inserted += len(jobs)
        return rows

    def _run_batch(self) -> None:
        interrupted: BaseException | None = None
        try:
            self._gather()
        except BaseException as error:  # noqa: BLE001 - raised once the batch has run
            # The queued callers wait on this leader, so it inserts their
            # jobs before the interruption reaches its own caller.
            interrupted = error
        batch: list[_Request] = []
        rows: list[Row] | None = None
        try:
            with self._lock:
                batch, self._waiting = self._waiting, []
                self._expected = max(1, len(batch))
            jobs = [job for request in batch for job in request.jobs]
            metas = [meta for request in batch for meta in request.metas]
            with self._pool.connection() as conn:
                rows = execute_insert(self._statements, self._channel, conn, jobs, metas)
        except BaseException as error:
            if rows is not None:
                # The jobs are inserted: their callers get their rows, and
                # only this leader's caller the interruption.
                interrupted = interrupted or error
            elif not batch:
                # No request was taken, so no caller waits for this batch.
                raise
            else:
                for request in batch:
                    request.error = error
        finally:
            self._finish(batch, rows)
        if interrupted is not None:
            raise interrupted

    def _finish(self, batch: list[_Request], rows: list[Row] | None) -> None:
        """Give each request its `rows`, hand the combiner over and wake the batch's callers.

        A step that an interrupt (Ctrl-C on the main thread) hits is run
        again, and the interruption is raised once all have run. Otherwise a
        caller could wait forever for a hand-over or for rows that were
        inserted.

        NOTE: an interrupt inside a locked block, or FINISH_TRIES interrupts
        in a row here, can still leave the combiner busy.
        """
        interrupted: BaseException | None = None
        shared = rows is None
        handed = False
        woken = 0
        for _ in range(FINISH_TRIES):
            try:
                if not shared:
                    assert rows is not None
                    self.statements_run += 1
                    self.jobs_inserted += len(rows)
                    start = 0
                    for request in batch:
                        request.rows = rows[start : start + len(request.jobs)]
                        start += len(request.jobs)
                    shared = True
                if not handed:
                    self._hand_over()
                    handed = True
                while woken < len(batch):
                    batch[woken].lead = False
                    batch[woken].done.set()
                    woken += 1
                break
            except BaseException as error:  # noqa: BLE001 - raised once every step ran
                interrupted = error
        if interrupted is not None:
            raise interrupted

    def _gather(self) -> None:
        """Wait until the expected callers have queued, or the window ends."""
        with self._lock:
            if len(self._waiting) >= self._expected:
                return
            self._gathered.clear()
            self._gathering = True
        try:
            self._gathered.wait(self._gather_seconds)
        finally:
            with self._lock:
                self._gathering = False

    def _hand_over(self) -> None:
        """Make the first waiting caller run the next batch, or mark the combiner idle."""
        with self._lock:
            if not self._waiting:
                self._busy = False
                return
            successor = self._waiting[0]
            successor.lead = True
        successor.done.set()

    def _abandon(self, request: _Request, lead: bool) -> None:
        """Withdraw a request whose caller was interrupted before its batch ran.

        A request not yet taken into a batch is removed. A caller that was to
        lead the next batch (`lead`) hands the combiner over, and one that
        was made the next leader runs its batch first, so that the callers
        queued behind it are not left waiting forever.
        """
        with self._lock:
            waiting = request in self._waiting and not request.lead
            if waiting:
                self._waiting.remove(request)
        if waiting:
            # A caller that was to lead hands over. Once a batch took the
            # request, that batch hands over instead.
            if lead:
                self._hand_over()
        elif request.lead:
            self._run_batch()


def _result(request: _Request) -> list[Row]:
    if request.error is not None:
        raise request.error
    return request.rows
