"""Telemetry events of real jobs, relays and listener connections on an in-process instance."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from relay_actors import Error, Instance, JobError, Ok, Reason, Relay, telemetry
from relay_actors.telemetry import Event
from tests.workers import QUICK_QUEUE, Double, Fail, Flaky

# Seconds an await or an event may take on an idle local instance.
EVENT_TIMEOUT = 10.0
# A queue that no instance in these tests runs, so its jobs never start.
IDLE_QUEUE = "telemetry_idle"

Record = tuple[Event, dict[str, Any], dict[str, Any]]


class Recorder:
    """A telemetry handler that keeps every event and lets a test wait for one."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._changed = threading.Condition()

    def __call__(
        self, event: Event, measurements: dict[str, Any], metadata: dict[str, Any]
    ) -> None:
        with self._changed:
            self.records.append((event, dict(measurements), dict(metadata)))
            self._changed.notify_all()

    def of(self, event: Event, **metadata: Any) -> list[Record]:
        """Return the records of `event` whose metadata has every given key and value."""
        with self._changed:
            return [
                record
                for record in self.records
                if record[0] == event
                and all(record[2].get(key) == value for key, value in metadata.items())
            ]

    def wait_for(self, event: Event, *, after: int = 0, **metadata: Any) -> tuple[int, Record]:
        """Wait for a matching record at position `after` or later; return its position too."""
        deadline = time.monotonic() + EVENT_TIMEOUT
        with self._changed:
            while True:
                for position in range(after, len(self.records)):
                    record = self.records[position]
                    if record[0] == event and all(
                        record[2].get(key) == value for key, value in metadata.items()
                    ):
                        return position, record
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(
                        f"no {event} event with {metadata} within {EVENT_TIMEOUT} s; "
                        f"recorded: {[(r[0][1:], r[2]) for r in self.records]}"
                    )
                self._changed.wait(remaining)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    """A Recorder attached to every relay_actors event for the test, detached after it."""
    handler = Recorder()
    with telemetry.attached(f"test-{secrets.token_hex(4)}", sorted(telemetry.EVENTS), handler):
        yield handler


def test_job_emits_start_and_stop(
    start_instance: Callable[..., Instance], recorder: Recorder
) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Double.new({"int": 4}))

    assert Relay.await_(relay, timeout=EVENT_TIMEOUT) == Ok(8)

    start_at, (_, start, start_meta) = recorder.wait_for(telemetry.JOB_START, job_id=relay.job.id)
    stop_at, (_, stop, stop_meta) = recorder.wait_for(telemetry.JOB_STOP, job_id=relay.job.id)
    assert start_at < stop_at
    assert stop["duration"] > 0
    assert stop["queue_wait"] >= 0
    assert start["queue_wait"] == stop["queue_wait"]
    assert start["system_time"] == pytest.approx(time.time(), abs=EVENT_TIMEOUT)
    for metadata in (start_meta, stop_meta):
        assert metadata["queue"] == QUICK_QUEUE
        assert metadata["worker"] == relay.job.worker
        assert metadata["attempt"] == 1
        assert metadata["node"] == instance.node_id
    assert stop_meta["state"] == "completed"
    assert recorder.of(telemetry.JOB_EXCEPTION, job_id=relay.job.id) == []


def test_failing_job_emits_exception(
    start_instance: Callable[..., Instance], recorder: Recorder
) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Fail.new({"message": "broken on purpose"}))

    result = Relay.await_(relay, timeout=EVENT_TIMEOUT)

    assert isinstance(result, Error)
    assert isinstance(result.reason, JobError)
    _, (_, measurements, metadata) = recorder.wait_for(telemetry.JOB_EXCEPTION, job_id=relay.job.id)
    assert measurements["duration"] > 0
    assert measurements["queue_wait"] >= 0
    assert metadata["error_type"] == "builtins.ValueError"
    assert isinstance(metadata["error"], ValueError)
    assert metadata["retry"] is False
    assert metadata["state"] == "discarded"
    assert metadata["queue"] == QUICK_QUEUE
    assert recorder.of(telemetry.JOB_STOP, job_id=relay.job.id) == []


def test_retried_job_emits_exception_then_stop(
    start_instance: Callable[..., Instance], recorder: Recorder
) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Flaky.new({"succeed_on": 2}))

    assert Relay.await_(relay, timeout=EVENT_TIMEOUT, with_retries=True) == Ok("succeeded")

    failed_at, (_, _, failed) = recorder.wait_for(telemetry.JOB_EXCEPTION, job_id=relay.job.id)
    stopped_at, (_, stopped, done) = recorder.wait_for(telemetry.JOB_STOP, job_id=relay.job.id)
    assert failed_at < stopped_at
    assert failed["attempt"] == 1
    assert failed["retry"] is True
    assert failed["state"] == "retryable"
    assert failed["error_type"] == "builtins.RuntimeError"
    assert done["attempt"] == 2
    assert stopped["queue_wait"] >= 0


def test_await_emits_delivered(start_instance: Callable[..., Instance], recorder: Recorder) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Double.new({"int": 1}))
    begun = time.monotonic()

    assert Relay.await_(relay, timeout=EVENT_TIMEOUT) == Ok(2)

    waited = time.monotonic() - begun
    # The caller's thread emits the event before await_ returns.
    delivered = recorder.of(telemetry.RELAY_DELIVERED, job_id=relay.job.id)
    assert len(delivered) == 1
    _, measurements, metadata = delivered[0]
    assert 0 <= measurements["wait"] <= waited
    assert measurements["latency"] > 0
    assert metadata["outcome"] == "ok"
    assert metadata["ref"] == str(relay.ref)
    assert metadata["queue"] == QUICK_QUEUE
    assert metadata["instance"] == instance.name
    assert recorder.of(telemetry.RELAY_TIMEOUT) == []


def test_await_error_emits_delivered_outcome(
    start_instance: Callable[..., Instance], recorder: Recorder
) -> None:
    instance = start_instance()
    relay = Relay.async_(instance.name, Fail.new({"message": "broken on purpose"}))

    Relay.await_(relay, timeout=EVENT_TIMEOUT)

    delivered = recorder.of(telemetry.RELAY_DELIVERED, job_id=relay.job.id)
    assert [metadata["outcome"] for _, _, metadata in delivered] == ["job_error"]


def test_await_timeout_emits_timeout(
    start_instance: Callable[..., Instance], recorder: Recorder
) -> None:
    instance = start_instance()
    never_runs = Relay.async_(instance.name, Double.new({"int": 1}, queue=IDLE_QUEUE))
    runs = Relay.async_(instance.name, Double.new({"int": 5}))

    results = Relay.await_many([never_runs, runs], timeout=1.0)

    assert results == [Error(Reason.TIMEOUT), Ok(10)]
    timed_out = recorder.of(telemetry.RELAY_TIMEOUT)
    assert [metadata["job_id"] for _, _, metadata in timed_out] == [never_runs.job.id]
    assert timed_out[0][1]["wait"] >= 1.0
    assert timed_out[0][2]["queue"] == IDLE_QUEUE
    delivered = recorder.of(telemetry.RELAY_DELIVERED)
    assert [metadata["job_id"] for _, _, metadata in delivered] == [runs.job.id]


def test_listener_reconnect_emits_disconnected_then_connected(
    start_instance: Callable[..., Instance],
    recorder: Recorder,
    db: psycopg.Connection[Any],
) -> None:
    instance = start_instance()
    first_at, (_, first, _) = recorder.wait_for(telemetry.LISTENER_CONNECTED, node=instance.node_id)
    assert first["downtime"] is None
    application_name = f"relay_actors listener {instance.node_id}"[:63]

    row = db.execute(
        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = %s AND datname = current_database()",
        (application_name,),
    ).fetchone()

    assert row is not None and row[0] == 1, f"expected one backend named {application_name!r}"
    lost_at, (_, lost, lost_meta) = recorder.wait_for(
        telemetry.LISTENER_DISCONNECTED, after=first_at, node=instance.node_id
    )
    assert lost_meta["reason"] == "connection_lost"
    assert isinstance(lost_meta["error"], psycopg.Error)
    assert lost["uptime"] > 0
    _, (_, again, _) = recorder.wait_for(
        telemetry.LISTENER_CONNECTED, after=lost_at, node=instance.node_id
    )
    assert again["downtime"] >= 0
    assert again["connects"] == first["connects"] + 1
    # The new connection delivers results again.
    relay = Relay.async_(instance.name, Double.new({"int": 3}))
    assert Relay.await_(relay, timeout=EVENT_TIMEOUT) == Ok(6)


def test_instance_stop_emits_disconnected(
    start_instance: Callable[..., Instance], recorder: Recorder
) -> None:
    instance = start_instance()
    recorder.wait_for(telemetry.LISTENER_CONNECTED, node=instance.node_id)

    instance.stop()

    recorder.wait_for(telemetry.LISTENER_DISCONNECTED, node=instance.node_id)
    stopped = recorder.of(telemetry.LISTENER_DISCONNECTED, node=instance.node_id)
    assert [metadata["reason"] for _, _, metadata in stopped] == ["stopped"]
    assert stopped[0][2]["error"] is None
