"""Hardening: hostile notifications, signed and private results, tracebacks, identifiers."""

from __future__ import annotations

import base64
import gc
import json
import logging
import random
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

import relay_actors
from relay_actors import ConfigurationError, Error, Instance, JobError, Ok, Reason, Relay, codec
from relay_actors.wire import MAX_PAYLOAD_BYTES, SIGNATURE_BYTES
from tests.conftest import DEFAULT_QUEUES, wait_until
from tests.workers import QUICK_QUEUE, Echo, Fail

RESULT_TIMEOUT = 10.0
HOSTILE_PAYLOADS = 10_000
WARMUP_PAYLOADS = 1_000
MAX_RSS_GROWTH_BYTES = 20 * 1024 * 1024
# The listener logs at most one WARNING per second per kind of fault.
WARNING_INTERVAL_SECONDS = 1.0
SEED = 20_240_607


def rss_bytes() -> int:
    """Return the resident set size of this process, from /proc/self/status."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS missing from /proc/self/status")


def entry(
    mailbox: str,
    ref: str,
    job_id: Any = 1,
    status: Any = "ok",
    attempt: Any = 1,
    final: Any = 1,
    payload: Any = None,
    signature: Any = None,
) -> list[Any]:
    fields = [mailbox, ref, job_id, status, attempt, final, payload]
    if signature is not None:
        fields.append(signature)
    return fields


def envelope(*entries: list[Any]) -> str:
    return "1" + json.dumps(list(entries), separators=(",", ":"))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def fake_signature(rng: random.Random) -> str:
    return b64(rng.randbytes(SIGNATURE_BYTES))


@dataclass
class Targets:
    """Real names that hostile payloads aim at."""

    relay_channel: str
    insert_channel: str
    mailbox: str
    victims: list[tuple[str, int]]
    genuine: list[str]
    signed: bool


@dataclass
class Flood:
    """Hostile payloads by kind, and how many of each were sent."""

    targets: Targets
    rng: random.Random
    sent: Counter[str] = field(default_factory=Counter)

    def payloads(self, count: int) -> Iterator[tuple[str, str]]:
        """Yield `count` (channel, payload) pairs, cycling through every kind of fault."""
        kinds = [
            self.garbage,
            self.wrong_version,
            self.bad_json,
            self.wrong_shape,
            self.wrong_types,
            self.bad_base64,
            self.bad_codec_bytes,
            self.oversize,
            self.unknown_mailbox,
            self.forged_for_victim,
            self.replayed,
            self.tampered,
            self.insert_noise,
        ]
        for index in range(count):
            kind = kinds[index % len(kinds)]
            channel, payload = kind()
            self.sent[kind.__name__] += 1
            yield channel, payload

    def _signature(self) -> Any:
        return fake_signature(self.rng) if self.rng.random() < 0.7 else None

    def _ref(self) -> str:
        return str(uuid.uuid4())

    def garbage(self) -> tuple[str, str]:
        alphabet = '[]{}",:0123456789abcdefnulltrue \\'
        size = self.rng.randrange(0, 300)
        return self.targets.relay_channel, "".join(self.rng.choices(alphabet, k=size))

    def wrong_version(self) -> tuple[str, str]:
        body = envelope(entry(self.targets.mailbox, self._ref()))[1:]
        return self.targets.relay_channel, self.rng.choice(["0", "2", "9", "x", ""]) + body

    def bad_json(self) -> tuple[str, str]:
        choices = ["1[", "1[[", "1" + "[" * 7_000, '1["a",', "1\x7f", "1[1,2,]"]
        return self.targets.relay_channel, self.rng.choice(choices)

    def wrong_shape(self) -> tuple[str, str]:
        choices = ['1{"a":1}', '1"entries"', "1null", "1[1]", '1[["a"]]', "1[[[]]]"]
        return self.targets.relay_channel, self.rng.choice(choices)

    def wrong_types(self) -> tuple[str, str]:
        mailbox, ref = self.targets.mailbox, self._ref()
        choices = [
            entry(mailbox, ref, job_id=True),
            entry(mailbox, ref, job_id=-5),
            entry(mailbox, ref, job_id="7"),
            entry(mailbox, ref, attempt=1.5),
            entry(mailbox, ref, final="yes"),
            entry(mailbox, ref, status="exploded"),
            entry(mailbox, ref, status=None),
            entry(mailbox, ref, payload=12),
            entry(mailbox, ref, signature=12),
            # Non-ASCII text makes base64 and hmac.compare_digest raise, not return False.
            entry(mailbox, ref, payload="\u00e9t\u00e9"),
            entry(mailbox, ref, signature="sign\u00e9"),
            entry(mailbox, 5),
            entry(["urn"], ref),
            [*entry(mailbox, ref), "sig", "extra"],
            entry(mailbox, ref)[:6],
        ]
        return self.targets.relay_channel, envelope(self.rng.choice(choices))

    def bad_base64(self) -> tuple[str, str]:
        payload = self.rng.choice(["!!!", "abc", "====", "a" * 5, "\u00e9t\u00e9"])
        item = entry(
            self.targets.mailbox, self._ref(), payload=payload, signature=self._signature()
        )
        return self.targets.relay_channel, envelope(item)

    def bad_codec_bytes(self) -> tuple[str, str]:
        payload = b64(self.rng.randbytes(self.rng.randrange(0, 200)))
        item = entry(
            self.targets.mailbox, self._ref(), payload=payload, signature=self._signature()
        )
        return self.targets.relay_channel, envelope(item)

    def oversize(self) -> tuple[str, str]:
        # Legal: the payload stays under PostgreSQL's 8000-byte limit.
        item = entry(
            self.targets.mailbox, self._ref(), payload="", signature=fake_signature(self.rng)
        )
        room = MAX_PAYLOAD_BYTES - len(envelope(item)) - 16
        item[6] = b64(self.rng.randbytes(room * 3 // 4))
        return self.targets.relay_channel, envelope(item)

    def unknown_mailbox(self) -> tuple[str, str]:
        mailbox = self.rng.choice([f"urn:uuid:{uuid.uuid4()}", "", "relay_actors", "x" * 500])
        payload = b64(codec.encode("unknown mailbox"))
        item = entry(mailbox, self._ref(), payload=payload, signature=self._signature())
        return self.targets.relay_channel, envelope(item)

    def forged_for_victim(self) -> tuple[str, str]:
        # Addressed correctly to a real relay whose job never runs.
        ref, job_id = self.rng.choice(self.targets.victims)
        payload = b64(codec.encode("forged"))
        item = entry(self.targets.mailbox, ref, job_id, payload=payload)
        if self.targets.signed:
            item.append(fake_signature(self.rng))
        return self.targets.relay_channel, envelope(item)

    def replayed(self) -> tuple[str, str]:
        return self.targets.relay_channel, self.rng.choice(self.targets.genuine)

    def tampered(self) -> tuple[str, str]:
        items = json.loads(self.rng.choice(self.targets.genuine)[1:])
        for item in items:
            item[6] = b64(codec.encode("tampered"))
        return self.targets.relay_channel, envelope(*items)

    def insert_noise(self) -> tuple[str, str]:
        choices = [QUICK_QUEUE, "no-such-queue", "", "'; DROP TABLE jobs; --", "q" * 7_900]
        return self.targets.insert_channel, self.rng.choice(choices)


def send_all(dsn: str, payloads: Iterator[tuple[str, str]], errors: list[BaseException]) -> None:
    """Send each payload with pg_notify in its own transaction, so none are merged."""
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for channel, payload in payloads:
                conn.execute("SELECT pg_notify(%s, %s)", (channel, payload))
    except BaseException as error:  # noqa: BLE001 - re-raised on the test thread
        errors.append(error)


@pytest.fixture
def listening(database_dsn: str) -> Iterator[Callable[[str], psycopg.Connection[Any]]]:
    """Factory of autocommit connections that LISTEN on a channel; closed after the test."""
    connections: list[psycopg.Connection[Any]] = []

    def listen(channel: str) -> psycopg.Connection[Any]:
        conn = psycopg.connect(database_dsn, autocommit=True)
        connections.append(conn)
        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        return conn

    yield listen
    for conn in connections:
        conn.close()


def capture(conn: psycopg.Connection[Any], count: int, timeout: float) -> list[str]:
    """Return the payloads of the next `count` notifications on `conn`."""
    payloads: list[str] = []
    deadline = time.monotonic() + timeout
    while len(payloads) < count and time.monotonic() < deadline:
        for notify in conn.notifies(timeout=max(0.0, deadline - time.monotonic()), stop_after=1):
            payloads.append(notify.payload)
    return payloads


def listener_statistics(instance: Instance) -> dict[str, Any]:
    statistics: dict[str, Any] = instance.statistics()["listener"]
    return statistics


@pytest.mark.timeout(240)
@pytest.mark.parametrize("signed", [True, False], ids=["with-secret", "without-secret"])
def test_listener_survives_hostile_notifications(
    start_instance: Callable[..., Instance],
    listening: Callable[[str], psycopg.Connection[Any]],
    database_dsn: str,
    caplog: pytest.LogCaptureFixture,
    signed: bool,
) -> None:
    secret = secrets.token_hex(16) if signed else None
    start_instance(queues=DEFAULT_QUEUES, secret=secret, node="hardening-worker")
    caller = start_instance(queues={}, secret=secret, node="hardening-caller")
    conn = listening(caller.relay_channel)

    # Genuine results, captured from the channel for replaying.
    warm = [Relay.async_(caller.name, Echo.new({"value": i})) for i in range(5)]
    assert Relay.await_many(warm, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(5)]
    genuine = capture(conn, 5, RESULT_TIMEOUT)
    assert genuine, "no genuine notification captured"
    victims = [Relay.async_(caller.name, Echo.new({"value": "victim"}, scheduled_in=3600))]
    victims += [Relay.async_(caller.name, Echo.new({"value": "victim"}, scheduled_in=3600))]
    mailbox = warm[0].mailbox
    targets = Targets(
        relay_channel=caller.relay_channel,
        insert_channel=caller.insert_channel,
        mailbox=mailbox.actor_urn,
        victims=[(str(v.ref), v.job.id or 0) for v in victims],
        genuine=genuine,
        signed=signed,
    )
    flood = Flood(targets, random.Random(SEED))
    genuine_count = len(warm)

    def run_flood(count: int) -> tuple[int, float]:
        """Send `count` payloads while awaiting genuine relays; return (relays, seconds)."""
        errors: list[BaseException] = []
        sender = threading.Thread(
            target=send_all, args=(database_dsn, flood.payloads(count), errors), daemon=True
        )
        started = time.monotonic()
        sender.start()
        awaited = 0
        while sender.is_alive():
            relay = Relay.async_(caller.name, Echo.new({"value": f"genuine {awaited}"}))
            result = Relay.await_(relay, timeout=RESULT_TIMEOUT)
            assert result == Ok(f"genuine {awaited}"), result
            awaited += 1
        sender.join()
        assert not errors, errors
        # Notifications on one channel arrive in commit order, so once this
        # result arrives the listener has handled every hostile payload.
        last = Relay.async_(caller.name, Echo.new({"value": "last"}))
        assert Relay.await_(last, timeout=60.0) == Ok("last")
        return awaited + 1, time.monotonic() - started

    warmed, _ = run_flood(WARMUP_PAYLOADS)
    genuine_count += warmed
    flood.sent.clear()
    gc.collect()
    rss_before = rss_bytes()
    before = listener_statistics(caller)
    outcomes_before = mailbox.proxy().statistics().get(timeout=5)["outcomes"]
    caplog.clear()
    caplog.set_level(logging.WARNING, logger="relay_actors.listener")

    awaited, seconds = run_flood(HOSTILE_PAYLOADS)
    genuine_count += awaited

    gc.collect()
    growth = rss_bytes() - rss_before
    after = listener_statistics(caller)
    outcomes = mailbox.proxy().statistics().get(timeout=5)["outcomes"]
    restarts = caller.statistics()["restarts"].get("listener", 0)
    dropped = after["dropped"] - before["dropped"]
    delivered = after["delivered"] - before["delivered"]
    unroutable = after["unroutable"] - before["unroutable"]
    # Outcomes the mailbox stored beyond the genuine relays' own.
    misdelivered = outcomes - outcomes_before - awaited
    victim_results = Relay.await_many(victims, timeout=0.5)
    warnings = Counter(
        getattr(record, "action", "?")
        for record in caplog.records
        if record.name == "relay_actors.listener" and record.levelno == logging.WARNING
    )
    sent = sum(flood.sent.values())
    print(
        f"\nhostile notifications ({'with' if signed else 'without'} a secret): "
        f"sent {sent} ({flood.sent['insert_noise']} on the insert channel) in {seconds:.1f} s, "
        f"dropped {dropped}, delivered {delivered} (genuine relays {awaited}, replays "
        f"{flood.sent['replayed']}), unroutable {unroutable}, misdelivered {misdelivered}, "
        f"victims {victim_results}, listener restarts {restarts}, "
        f"RSS growth {growth / 2**20:.1f} MiB, warnings {dict(warnings)}"
    )

    assert sent == HOSTILE_PAYLOADS
    assert after["connected"], after
    assert after["connects"] == before["connects"], "the listener reconnected"
    assert restarts == 0
    assert growth <= MAX_RSS_GROWTH_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB"
    allowed = int(seconds / WARNING_INTERVAL_SECONDS) + 1
    for kind, count in warnings.items():
        assert count <= allowed, f"{count} warnings of kind {kind} in {seconds:.1f} s"
    if signed:
        assert misdelivered == 0
        assert victim_results == [Error(Reason.TIMEOUT)] * len(victims)
        # A tampered payload may hold several entries, each dropped on its own.
        relay_sent = sent - flood.sent["insert_noise"]
        assert dropped >= relay_sent - flood.sent["replayed"]
        for victim in victims:
            assert caller.cancel_job(victim.job.id or 0)
        assert Relay.await_many(victims, timeout=RESULT_TIMEOUT) == [Error(Reason.CANCELLED)] * len(
            victims
        )
    else:
        # Without a secret, any database role that can NOTIFY can forge a
        # result for a relay it can name: the victims get the forged value.
        assert victim_results == [Ok("forged")] * len(victims)
        assert misdelivered > 0


def test_signed_results_end_to_end(start_instance: Callable[..., Instance]) -> None:
    secret = secrets.token_hex(16)
    start_instance(queues=DEFAULT_QUEUES, secret=secret)
    caller = start_instance(queues={}, secret=secret)

    relays = [Relay.async_(caller.name, Echo.new({"value": i})) for i in range(5)]

    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(5)]
    assert listener_statistics(caller)["dropped"] == 0


def test_other_secret_drops_results(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    start_instance(queues=DEFAULT_QUEUES, secret=secrets.token_hex(16))
    # No safety-net poll during the test, since it would read the result from the row.
    caller = start_instance(queues={}, secret=secrets.token_hex(16), safety_net_interval=600.0)
    relay = Relay.async_(caller.name, Echo.new({"value": "signed elsewhere"}))

    wait_until(
        lambda: listener_statistics(caller)["dropped"] >= 1,
        timeout=RESULT_TIMEOUT,
        message=lambda: f"listener statistics {listener_statistics(caller)}",
    )
    assert Relay.await_(relay, timeout=0.5) == Error(Reason.TIMEOUT)
    query = sql.SQL("SELECT state, outcome FROM {} WHERE id = %s").format(
        sql.Identifier(prefix, "jobs")
    )
    assert db.execute(query, (relay.job.id,)).fetchone() == ("completed", "ok")


def test_private_results_carry_no_payload(
    start_instance: Callable[..., Instance], listening: Callable[[str], psycopg.Connection[Any]]
) -> None:
    start_instance(queues=DEFAULT_QUEUES)
    caller = start_instance(queues={}, plugins=[Relay.plugin(inline_results=False)])
    conn = listening(caller.relay_channel)

    relay = Relay.async_(caller.name, Echo.new({"value": "private"}))

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("private")
    payloads = capture(conn, 1, RESULT_TIMEOUT)
    assert len(payloads) == 1
    items = json.loads(payloads[0][1:])
    assert len(items) == 1
    assert items[0][1] == str(relay.ref)
    assert items[0][6] is None


@pytest.mark.parametrize("inline_results", [True, False], ids=["inline", "from-row"])
def test_tracebacks_off_keeps_row_errors(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    inline_results: bool,
) -> None:
    start_instance(queues=DEFAULT_QUEUES)
    plugin = Relay.plugin(tracebacks=False, inline_results=inline_results)
    caller = start_instance(queues={}, plugins=[plugin])

    relay = Relay.async_(caller.name, Fail.new({"message": "no traceback please"}))
    result = Relay.await_(relay, timeout=RESULT_TIMEOUT)

    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    assert result.reason.type == "builtins.ValueError"
    assert result.reason.message == "no traceback please"
    assert result.reason.traceback == ""
    query = sql.SQL("SELECT errors FROM {} WHERE id = %s").format(sql.Identifier(prefix, "jobs"))
    row = db.execute(query, (relay.job.id,)).fetchone()
    assert row is not None
    assert "ValueError: no traceback please" in row[0][-1]["traceback"]


@pytest.mark.parametrize(
    "prefix_value",
    ["Upper", 'quo"te', "semi;colon", "a" * 49, "pg_catalog", "pg_x", "", "1abc", "sp ace", "x-y"],
)
def test_invalid_prefix_rejected(database_dsn: str, prefix_value: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid prefix"):
        relay_actors.start(name="invalid-prefix", dsn=database_dsn, prefix=prefix_value)


@pytest.mark.parametrize(
    "queue",
    ["", "a b", "q'; DROP TABLE jobs; --", 'q"', "x" * 129, "caf\u00e9", "new\nline"],
)
def test_invalid_queue_name_rejected(database_dsn: str, prefix: str, queue: str) -> None:
    with pytest.raises(ConfigurationError, match="invalid queue name"):
        relay_actors.start(name="invalid-queue", dsn=database_dsn, prefix=prefix, queues={queue: 1})


def test_sql_text_stored_verbatim(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    hostile = "'); DROP TABLE jobs; -- \" \\ $$ %s %(x)s {jobs}"
    start_instance(queues={**DEFAULT_QUEUES, "odd:queue.name-1_x": 2})
    caller = start_instance(queues={}, node=hostile)
    job = Echo.new(
        {"value": hostile, hostile: [hostile]},
        queue="odd:queue.name-1_x",
        meta={hostile: hostile},
        tags=[hostile],
    )

    relay = Relay.async_(caller.name, job)

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(hostile)
    query = sql.SQL("SELECT args, meta, tags, queue FROM {} WHERE id = %s").format(
        sql.Identifier(prefix, "jobs")
    )
    row = db.execute(query, (relay.job.id,)).fetchone()
    assert row is not None
    args, meta, tags, queue = row
    assert args == {"value": hostile, hostile: [hostile]}
    assert meta[hostile] == hostile
    assert tags == [hostile]
    assert queue == "odd:queue.name-1_x"
