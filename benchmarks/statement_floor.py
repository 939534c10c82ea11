"""The floor's loop running relay_actors' table and statements.

This side splits the latency gap between relay_actors and the floor in two.
Its caller and worker are the floor's: no actors, and no thread hand-off
other than the floor's own. They run relay_actors' migrations and send its
one-job insert, its claim and its record of one outcome, with the parameters
that relay_actors sends. The record carries a result encoded by relay_actors'
codec, in a notification packed in its wire format. Claims commit before the
job runs, as on relay_actors' durable worker.

So its gap to the floor that commits its claims first is the cost of
relay_actors' table and statements, and relay_actors' gap to it is the cost
of the actors.
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.floor import Caller, FloorSide
from benchmarks.floor_worker import FloorWorker, perform
from benchmarks.stats import Failures
from relay_actors import codec
from relay_actors.names import insert_channel as relay_insert_channel
from relay_actors.store.migrations import migrate
from relay_actors.store.statements import statements_for
from relay_actors.wire import STATUS_OK, Delivery, Entry, pack_payloads_with_ids, parse_payload

QUEUE = "statement_floor"
WORKER = "benchmarks.workers.Echo"
# The claiming node's id, written to attempted_by as relay_actors writes its node id.
NODE = "statement-floor-worker"
WORKER_OPTION = "--relay-statements"


class StatementFloorSide(FloorSide):
    """The floor's worker process and callers on relay_actors' table and statements."""

    name = "floor with relay_actors' statements"

    def __init__(self, dsn: str, schema: str) -> None:
        super().__init__(dsn, schema, durable_claims=True)

    def create_table(self, conn: psycopg.Connection[Any]) -> None:
        migrate(conn, self.schema)

    def worker_options(self) -> list[str]:
        return [WORKER_OPTION]

    def caller(self, index: int) -> Caller:
        return StatementCaller(self, index)

    def reset(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(self.schema, "jobs")))


class StatementCaller(Caller):
    """A floor caller that inserts with relay_actors' statement and parses its notifications."""

    def __init__(self, side: StatementFloorSide, index: int) -> None:
        super().__init__(side, index)
        self._statement = statements_for(side.schema).insert_one
        self._insert_channel = relay_insert_channel(side.schema)
        # A mailbox address for the notifications to carry. This caller reads
        # only their job ids and results.
        self._mailbox = f"urn:uuid:{uuid.uuid4()}"

    def insert(self, n: int) -> int:
        meta = {"relay": {"ref": str(uuid.uuid4()), "node": self.channel, "mailbox": self._mailbox}}
        params = {
            "queue": QUEUE,
            "worker": WORKER,
            "args": Jsonb({"n": n}),
            "meta": Jsonb(meta),
            "tags": [],
            "max_attempts": 20,
            "priority": 0,
            "scheduled_at": None,
            "channel": self._insert_channel,
        }
        row = self._conn.execute(self._statement, params).fetchone()
        assert row is not None
        return int(row[0])

    def check(self, payload: str, expected: dict[int, int], failures: Failures) -> None:
        """Remove the jobs whose results `payload` carries from `expected`, counting wrong ones."""
        for entry in parse_payload(payload):
            delivery = entry.delivery
            want = expected.pop(delivery.job_id, None)
            value = None if delivery.payload is None else codec.decode(delivery.payload)
            if want is None or value != want or delivery.status != STATUS_OK:
                failures.add(
                    f"statement floor job {delivery.job_id}: unexpected {delivery.status} {value!r}"
                )


class StatementFloorWorker(FloorWorker):
    """A floor worker connection that claims and records with relay_actors' statements."""

    def __init__(self, conn: psycopg.Connection[Any], schema: str, *args: Any, **kwargs: Any):
        super().__init__(conn, schema, *args, **kwargs)
        statements = statements_for(schema)
        self._claim_statement = statements.claim
        self._record_statement = statements.record_completed

    def _run_one(self) -> bool:
        conn = self._conn
        claim = {"node": NODE, "queue": QUEUE, "limit": 1}
        rows = conn.execute(self._claim_statement, claim).fetchall()
        if not rows:
            return False
        job_id, args, meta, attempt = rows[0][0], rows[0][3], rows[0][4], rows[0][6]
        result = codec.encode(perform(args["n"]))
        relay = meta["relay"]
        entry = Entry(
            relay["mailbox"], relay["ref"], Delivery(job_id, STATUS_OK, attempt, True, result)
        )
        ((payload, _),) = pack_payloads_with_ids([(entry, True)])
        conn.execute(self._record_statement, record_params(job_id, attempt, result, relay, payload))
        return True


def record_params(
    job_id: int, attempt: int, result: bytes, relay: dict[str, Any], payload: str
) -> dict[str, Any]:
    """Return the parameters of relay_actors' one-outcome record for a completed job."""
    return {
        "id": job_id,
        "attempt": attempt,
        "state": "completed",
        "outcome": STATUS_OK,
        "delay": 0.0,
        "extra_attempts": 0,
        "outcome_node": NODE,
        "result": result,
        "error": None,
        "meta_patch": None,
        "channel": relay["node"],
        "payload": payload,
    }
