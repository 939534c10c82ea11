"""Jobs that a node claimed but that none of its executors runs.

A claim can commit on the server while its reply never reaches the producer,
for example when the connection drops at that moment. The jobs then stay
`executing` under a node that keeps heartbeating, so no lifeline rescues them.
The producer finds such jobs by comparing the rows with its running attempts
and adopts those it finds twice, one audit period apart.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from relay_actors import Instance, Ok, Relay
from tests.faultproxy import LosingProxy, losing_proxy
from tests.integration.test_missed_signals import read_job
from tests.workers import QUICK_QUEUE, SLOW_QUEUE, Echo, Sleep

RESULT_TIMEOUT = 20.0
# Audits run every rescue_after seconds, so an unaccounted job is adopted
# within 2 to 3 s.
FAST_AUDIT = {"heartbeat_interval": 0.2, "rescue_after": 1.0, "poll_interval": 0.2}


# Requested before start_instance, so that instances stop before the proxy closes.
@pytest.fixture
def proxy(database_dsn: str) -> Iterator[LosingProxy]:
    with losing_proxy(database_dsn) as started:
        yield started


def test_lost_claim_reply_job_runs(
    proxy: LosingProxy,
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
) -> None:
    """The claim commits, its reply is lost, and the job still runs once, on its first attempt."""
    caller = start_instance(queues={})
    worker = start_instance(dsn=proxy.dsn, queues={QUICK_QUEUE: 2}, **FAST_AUDIT)
    marker = f"lose-{secrets.token_hex(8)}"
    proxy.lose_reply_containing(marker.encode())

    relay = Relay.async_(caller.name, Echo.new({"value": marker}))
    assert proxy.lost.wait(RESULT_TIMEOUT), "no reply carried the job's arguments"
    row = read_job(db, prefix, relay.job.id)
    assert (row["state"], row["attempt"], row["attempted_by"]) == ("executing", 1, worker.node_id)

    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(marker)
    row = read_job(db, prefix, relay.job.id)
    assert (row["state"], row["attempt"]) == ("completed", 1)
    statistics = worker.statistics()[f"producer {QUICK_QUEUE}"]
    assert statistics["adopted"] == 1


def test_long_attempt_never_adopted(
    start_instance: Callable[..., Instance], db: psycopg.Connection[Any], prefix: str
) -> None:
    """A job that runs through many audits is accounted for, so it runs once."""
    caller = start_instance(queues={})
    worker = start_instance(queues={SLOW_QUEUE: 1}, **FAST_AUDIT)
    relay = Relay.async_(caller.name, Sleep.new({"seconds": 4, "value": "slept"}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok("slept")
    row = read_job(db, prefix, relay.job.id)
    assert (row["state"], row["attempt"]) == ("completed", 1)
    assert worker.statistics()[f"producer {SLOW_QUEUE}"]["adopted"] == 0

