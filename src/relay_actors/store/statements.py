"""Named SQL statements for one schema prefix.

Values are always bound parameters; the schema is the only identifier, quoted
by psycopg.sql. Every statement that touches jobs lives here, so a reader can
check the locking and the state transitions in one place.
"""

from __future__ import annotations

from functools import lru_cache

from psycopg import sql

# Inserts a batch of jobs, given as one JSON array because that is cheaper for
# the client to encode than one parameter per column. It notifies the insert
# channel once per queue that got an available job. The notification goes out
# when the transaction commits.
_INSERT = """
WITH inserted AS (
    INSERT INTO {jobs}
        (state, queue, worker, args, meta, tags, max_attempts, priority, scheduled_at)
    SELECT CASE WHEN u.scheduled_at > now() THEN 'scheduled' ELSE 'available' END,
           u.queue, u.worker, u.args, u.meta, u.tags, u.max_attempts, u.priority,
           COALESCE(u.scheduled_at, now())
    FROM jsonb_to_recordset(%(jobs)s::jsonb)
         AS u(queue text, worker text, args jsonb, meta jsonb, tags text[],
              max_attempts smallint, priority smallint, scheduled_at timestamptz)
    RETURNING id, state, queue, inserted_at, scheduled_at, meta -> 'relay' ->> 'ref' AS ref
),
notified AS (
    SELECT pg_notify(%(channel)s, queue)
    FROM (SELECT DISTINCT queue FROM inserted WHERE state = 'available') AS available_queues
)
SELECT id, state, inserted_at, scheduled_at, ref, (SELECT count(*) FROM notified)
FROM inserted
"""

# Inserts a lone job, one parameter per column, with the same effects and
# returned columns as _INSERT. The server skips the JSON parsing and the
# DISTINCT over queues: a median of 140 us per insert against 161 us for
# _INSERT with one job, measured on a 2-vCPU machine with commits that did not
# wait for a flush.
_INSERT_ONE = """
WITH inserted AS (
    INSERT INTO {jobs}
        (state, queue, worker, args, meta, tags, max_attempts, priority, scheduled_at)
    VALUES (CASE WHEN %(scheduled_at)s::timestamptz > now() THEN 'scheduled' ELSE 'available' END,
            %(queue)s::text, %(worker)s::text, %(args)s::jsonb, %(meta)s::jsonb, %(tags)s::text[],
            %(max_attempts)s::smallint, %(priority)s::smallint,
            COALESCE(%(scheduled_at)s::timestamptz, now()))
    RETURNING id, state, queue, inserted_at, scheduled_at, meta -> 'relay' ->> 'ref' AS ref
)
SELECT id, state, inserted_at, scheduled_at, ref,
       (SELECT count(pg_notify(%(channel)s, queue)) FROM inserted WHERE state = 'available')
FROM inserted
"""

# Claims the next available jobs of a queue. SKIP LOCKED lets producers of
# several nodes claim concurrently without waiting on each other's rows. The
# chosen ids are joined to their rows. With IN, the plan first hashed the ids
# to remove duplicates, which a primary key cannot have. A lone claim took a
# median of 272 against 280 us, in a loop on one connection of a 2-vCPU
# machine with commits that did not wait for a flush.
_CLAIM = """
UPDATE {jobs} AS j
SET state = 'executing', attempt = j.attempt + 1, attempted_at = now(), attempted_by = %(node)s
FROM (
    SELECT id FROM {jobs}
    WHERE state = 'available' AND queue = %(queue)s
    ORDER BY priority, scheduled_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED) AS chosen
WHERE j.id = chosen.id
RETURNING j.id, j.queue, j.worker, j.args, j.meta, j.tags, j.attempt, j.max_attempts,
          j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.attempted_by
"""

# Jobs of a queue that a node claimed and still executes, other than those its
# producer accounts for: the rows of a claim whose reply was lost, or of
# prefetched jobs that could not be returned. Same columns as _CLAIM.
_UNACCOUNTED = """
SELECT j.id, j.queue, j.worker, j.args, j.meta, j.tags, j.attempt, j.max_attempts,
       j.priority, j.inserted_at, j.scheduled_at, j.attempted_at, j.attempted_by
FROM {jobs} AS j
WHERE j.state = 'executing' AND j.attempted_by = %(node)s AND j.queue = %(queue)s
  AND j.id <> ALL(%(known)s::bigint[])
ORDER BY j.id
LIMIT %(limit)s
"""

# Returns jobs that a node claimed but never started to the queue: their
# attempt is not counted. Only the claimed attempt matches, so a job rescued
# and claimed again meanwhile keeps running. It wakes the queue's nodes so
# that another can take them.
_UNCLAIM = """
WITH returned AS (
    UPDATE {jobs} AS j
    SET state = 'available', attempt = j.attempt - 1, attempted_at = NULL, attempted_by = NULL
    FROM unnest(%(ids)s::bigint[], %(attempts)s::smallint[]) AS r(id, attempt)
    WHERE j.id = r.id AND j.id = ANY(%(ids)s::bigint[]) AND j.attempt = r.attempt
      AND j.state = 'executing' AND j.attempted_by = %(node)s
    RETURNING j.queue
)
SELECT pg_notify(%(channel)s, queue) FROM (SELECT DISTINCT queue FROM returned) AS queues
"""

# Records the outcomes of finished attempts and sends their notifications, in
# one statement and so one transaction. Only rows still executing the same
# attempt on the same node change, so an outcome never overwrites a job that
# moved on (it was cancelled, rescued or released). The node matters because a
# prefetched job returned unstarted gets its attempt number back, and another
# node may then claim the job with the same number. A notification goes out only if every
# attempt it carries (n.ids lists "job id:attempt" pairs) was recorded; the
# acker resends the others' results. _RECORD_ONE_CTES writes a lone outcome.
#
# A batch comes as one JSON array of outcomes and one of notifications, with
# results as bytea in hex text. For a batch of three, psycopg encodes that in
# about 10 us, against 45 us for one array per column. The job ids are also
# named in a condition on j.id alone (as _UNCLAIM does), so that the planner
# finds the rows by id. With the join through u.id alone, the planner hashed a
# scan of the whole partial index of executing rows, which also contains an
# entry for every job that finished since the last VACUUM.
_RECORD_CTES = """
WITH updated AS (
    UPDATE {jobs} AS j
    SET state = u.state,
        outcome = u.outcome,
        result = u.result,
        completed_at = CASE WHEN u.state = 'completed' THEN now() ELSE j.completed_at END,
        discarded_at = CASE WHEN u.state = 'discarded' THEN now() ELSE j.discarded_at END,
        cancelled_at = CASE WHEN u.state = 'cancelled' THEN now() ELSE j.cancelled_at END,
        scheduled_at = CASE WHEN u.state IN ('scheduled', 'retryable')
                            THEN now() + make_interval(secs => u.delay) ELSE j.scheduled_at END,
        max_attempts = j.max_attempts + u.extra_attempts,
        errors = CASE WHEN u.error IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(u.error) END,
        meta = CASE WHEN u.meta_patch IS NULL THEN j.meta ELSE j.meta || u.meta_patch END
    FROM jsonb_to_recordset(%(outcomes)s::jsonb)
         AS u(id bigint, attempt smallint, state text, outcome text, result bytea,
              delay float8, extra_attempts smallint, error jsonb, meta_patch jsonb,
              node text)
    WHERE j.id = u.id AND j.id = ANY(%(outcome_ids)s::bigint[])
      AND j.state = 'executing' AND j.attempt = u.attempt
      AND (u.node IS NULL OR j.attempted_by = u.node)
    RETURNING j.id, u.attempt
),
notified AS (
    SELECT pg_notify(n.channel, n.payload)
    FROM jsonb_to_recordset(%(notifications)s::jsonb) AS n(channel text, payload text, ids text)
    WHERE NOT EXISTS (
        SELECT 1 FROM unnest(string_to_array(n.ids, ',')) AS wanted(pair)
        WHERE wanted.pair NOT IN (SELECT id || ':' || attempt FROM updated))
)
"""

# A lone outcome comes as one parameter per column, with at most one
# notification, which carries only its own attempt and is left out when its
# channel is NULL. So the notification goes out if the row was updated, and
# the server skips the JSON parsing, the join and the check of the pairs.
# Measured on a 2-vCPU machine with commits that did not wait for a flush, a
# record took a median of 140 us. A VALUES row joined to the job, with the
# pairs checked, took 152 us. The outcome's node is bound as outcome_node,
# because the claim binds the claiming node as node.
_RECORD_ONE_SET = """
WITH updated AS (
    UPDATE {jobs} AS j
    SET state = %(state)s::text,
        outcome = %(outcome)s::text,
        result = %(result)s::bytea,
        completed_at = CASE WHEN %(state)s::text = 'completed' THEN now() ELSE j.completed_at END,
        discarded_at = CASE WHEN %(state)s::text = 'discarded' THEN now() ELSE j.discarded_at END,
        cancelled_at = CASE WHEN %(state)s::text = 'cancelled' THEN now() ELSE j.cancelled_at END,
        scheduled_at = CASE WHEN %(state)s::text IN ('scheduled', 'retryable')
                            THEN now() + make_interval(secs => %(delay)s::float8)
                            ELSE j.scheduled_at END,
        max_attempts = j.max_attempts + %(extra_attempts)s::smallint,
        errors = CASE WHEN %(error)s::jsonb IS NULL THEN j.errors
                      ELSE j.errors || jsonb_build_array(%(error)s::jsonb) END,
        meta = CASE WHEN %(meta_patch)s::jsonb IS NULL THEN j.meta
                    ELSE j.meta || %(meta_patch)s::jsonb END
"""

# A lone completed outcome without an error, a meta patch or extra attempts,
# with the effects that _RECORD_ONE_CTES has for it. It sets only the columns
# that change, so the server evaluates no CASE per column. A record took a
# median of 419 against 461 us with flushed commits, and 252 against 284 us
# without, in a loop on one connection of a 2-vCPU machine.
_RECORD_COMPLETED_SET = """
WITH updated AS (
    UPDATE {jobs} AS j
    SET state = 'completed', outcome = %(outcome)s::text, result = %(result)s::bytea,
        completed_at = now()
"""

# The end of both one-outcome statements: the row of the attempt, and its
# notification, which is left out when its channel is NULL.
_RECORD_ONE_WHERE_AND_NOTIFY = """
    WHERE j.id = %(id)s::bigint AND j.state = 'executing' AND j.attempt = %(attempt)s::smallint
      AND (%(outcome_node)s::text IS NULL OR j.attempted_by = %(outcome_node)s::text)
    RETURNING j.id, j.attempt
),
notified AS (
    SELECT pg_notify(%(channel)s::text, %(payload)s::text)
    FROM updated
    WHERE %(channel)s::text IS NOT NULL
)
"""

_RECORD_ONE_CTES = _RECORD_ONE_SET + _RECORD_ONE_WHERE_AND_NOTIFY
_RECORD_COMPLETED_CTES = _RECORD_COMPLETED_SET + _RECORD_ONE_WHERE_AND_NOTIFY

# Follows any set of CTEs: the recorded attempts.
_RECORD_TAIL = """
SELECT id, attempt, (SELECT count(*) FROM notified) FROM updated
"""

# Follows any set of CTEs, so that a producer that records its executors'
# outcomes also claims jobs as _CLAIM does, and pays one round trip and one
# commit for both. Every row carries the recorded "job id:attempt" pairs.
# Claimed columns follow, NULL when none was claimed.
_RECORD_AND_CLAIM_TAIL = (
    """,
claimed AS ("""
    + _CLAIM
    + """)
SELECT recorded.pairs, recorded.notifications, claimed.*
FROM (SELECT coalesce(array_agg(id || ':' || attempt), '{{}}') AS pairs,
             (SELECT count(*) FROM notified) AS notifications
      FROM updated) AS recorded
LEFT JOIN claimed ON true
"""
)

# Makes due scheduled and retryable jobs available, and wakes their queues.
_STAGE = """
WITH due AS (
    SELECT id FROM {jobs}
    WHERE state IN ('scheduled', 'retryable') AND scheduled_at <= now()
    ORDER BY scheduled_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
),
staged AS (
    UPDATE {jobs} AS j SET state = 'available' FROM due WHERE j.id = due.id RETURNING j.queue
)
SELECT queue, count(*), pg_notify(%(channel)s, queue) FROM staged GROUP BY queue
"""

# Jobs left executing by a node whose heartbeat is older than the rescue
# delay, or whose node row is gone.
_FIND_ORPHANS = """
SELECT j.id, j.queue, j.worker, j.meta, j.attempt, j.max_attempts, j.attempted_by
FROM {jobs} AS j
WHERE j.state = 'executing'
  AND NOT EXISTS (
      SELECT 1 FROM {nodes} AS n
      WHERE n.node_id = j.attempted_by
        AND n.heartbeat_at > now() - make_interval(secs => %(rescue_after)s))
ORDER BY j.id
LIMIT %(limit)s
"""

_HEARTBEAT = """
INSERT INTO {nodes} (node_id, name, queues, workers, statistics)
VALUES (%(node_id)s, %(name)s, %(queues)s, %(workers)s, %(statistics)s)
ON CONFLICT (node_id) DO UPDATE
SET heartbeat_at = now(), statistics = EXCLUDED.statistics, workers = EXCLUDED.workers
"""

_DELETE_STALE_NODES = """
DELETE FROM {nodes} WHERE heartbeat_at < now() - make_interval(secs => %(age)s)
"""

# Deletes jobs that finished longer ago than the age, the earliest finished
# first, in bounded batches. The condition and the order repeat the
# expression and the predicate of jobs_prune_idx, so that the scan reads the
# old jobs' index entries only. The ids come as one array, so the delete
# finds each row by its primary key: with `id IN (subquery)`, the planner
# guessed a third of the table old and joined through a scan of all of it.
_PRUNE = """
DELETE FROM {jobs} WHERE id = ANY(ARRAY(
    SELECT id FROM {jobs}
    WHERE state IN ('completed', 'discarded', 'cancelled')
      AND coalesce(completed_at, discarded_at, cancelled_at)
          < now() - make_interval(secs => %(age)s)
    ORDER BY coalesce(completed_at, discarded_at, cancelled_at)
    LIMIT %(limit)s))
"""

# Cancels a job that has not finished. The old state shows whether a node is
# running it and must be notified.
_CANCEL = """
UPDATE {jobs} AS j
SET state = 'cancelled', cancelled_at = now(), result = NULL,
    outcome = CASE WHEN j.meta ? 'relay' THEN 'cancelled' END,
    meta = j.meta || jsonb_build_object('cancel_reason', %(reason)s::text)
FROM (SELECT id, state FROM {jobs} WHERE id = %(id)s FOR UPDATE) AS old
WHERE j.id = old.id
  AND old.state IN ('available', 'scheduled', 'retryable', 'executing')
RETURNING old.state, j.meta, j.attempt, j.queue, j.attempted_by
"""

_XACT_STATUS = "SELECT pg_xact_status(%(xid)s::xid8)"

_CURRENT_XID = "SELECT pg_current_xact_id()::text"

_READ_FINISHED = """
SELECT id, state, outcome, result, attempt FROM {jobs}
WHERE id = ANY(%(ids)s::bigint[]) AND outcome IS NOT NULL
"""

_NOTIFY_MANY = """
SELECT pg_notify(n.channel, n.payload)
FROM unnest(%(channel)s::text[], %(payload)s::text[]) AS n(channel, payload)
"""

# Selects the given jobs that were cancelled, for a node that may have missed
# their control notifications while its listener was disconnected.
_CANCELLED_AMONG = """
SELECT id FROM {jobs} WHERE id = ANY(%(ids)s::bigint[]) AND state = 'cancelled'
"""

_READ_OUTCOMES = """
SELECT id, state, outcome, result, attempt FROM {jobs} WHERE id = ANY(%(ids)s::bigint[])
"""

_UPSERT_NODE = """
INSERT INTO {nodes} (node_id, name, queues, workers)
VALUES (%(node_id)s, %(name)s, %(queues)s, %(workers)s)
ON CONFLICT (node_id) DO UPDATE
SET queues = EXCLUDED.queues, workers = EXCLUDED.workers, heartbeat_at = now()
"""

_DELETE_NODE = "DELETE FROM {nodes} WHERE node_id = %(node_id)s"


class Statements:
    """The statements of one schema, rendered to bytes once.

    psycopg renders a `sql.Composed` query again on every execute, which took
    about 6 % of the caller's Python time in the throughput benchmark. Bytes
    skip that. The schema is the only identifier, so the rendering does not
    depend on the connection.
    """

    def __init__(self, prefix: str) -> None:
        names = {
            "jobs": sql.Identifier(prefix, "jobs"),
            "nodes": sql.Identifier(prefix, "nodes"),
        }

        def render(template: str) -> bytes:
            return sql.SQL(template).format(**names).as_bytes(None)

        self.insert = render(_INSERT)
        self.insert_one = render(_INSERT_ONE)
        self.claim = render(_CLAIM)
        self.unclaim = render(_UNCLAIM)
        self.unaccounted = render(_UNACCOUNTED)
        self.record = render(_RECORD_CTES + _RECORD_TAIL)
        self.record_and_claim = render(_RECORD_CTES + _RECORD_AND_CLAIM_TAIL)
        self.record_one = render(_RECORD_ONE_CTES + _RECORD_TAIL)
        self.record_one_and_claim = render(_RECORD_ONE_CTES + _RECORD_AND_CLAIM_TAIL)
        self.record_completed = render(_RECORD_COMPLETED_CTES + _RECORD_TAIL)
        self.record_completed_and_claim = render(_RECORD_COMPLETED_CTES + _RECORD_AND_CLAIM_TAIL)
        self.notify_many = render(_NOTIFY_MANY)
        self.read_outcomes = render(_READ_OUTCOMES)
        self.cancelled_among = render(_CANCELLED_AMONG)
        self.upsert_node = render(_UPSERT_NODE)
        self.delete_node = render(_DELETE_NODE)
        self.stage = render(_STAGE)
        self.find_orphans = render(_FIND_ORPHANS)
        self.heartbeat = render(_HEARTBEAT)
        self.delete_stale_nodes = render(_DELETE_STALE_NODES)
        self.prune = render(_PRUNE)
        self.cancel = render(_CANCEL)
        self.xact_status = render(_XACT_STATUS)
        self.current_xid = render(_CURRENT_XID)
        self.read_finished = render(_READ_FINISHED)


@lru_cache(maxsize=64)
def statements_for(prefix: str) -> Statements:
    return Statements(prefix)
