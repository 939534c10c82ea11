"""The acker's replacement for a rescued attempt's outcome that the row rejects."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from relay_actors import Instance
from relay_actors.actors.acker import RECORD_FAILED_TYPE
from relay_actors.actors.lifeline import LOST_TYPE
from relay_actors.actors.messages import Record
from relay_actors.actors.outcomes import failed_attempt
from relay_actors.backoff import BASE_DELAY_SECONDS
from tests.conftest import job_state, wait_until
from tests.integration.test_missed_signals import read_job
from tests.integration.test_restart_outcomes import start_waiting_job
from tests.integration.test_results import retry_due_in
from tests.workers import SLOW_QUEUE

RESULT_TIMEOUT = 10.0


def test_unwritable_rescue_waits_backoff(
    start_instance: Callable[..., Instance],
    db: psycopg.Connection[Any],
    prefix: str,
    tmp_path: Path,
) -> None:
    """A rescued attempt whose outcome cannot be written is retried after the default backoff.

    The rescue's own outcome would make the job available at once. Its meta
    patch contains U+0000, which jsonb rejects, so the acker writes a failed
    attempt in its place, and that attempt's retry waits the default backoff.
    """
    instance = start_instance(queues={SLOW_QUEUE: 1})
    release = tmp_path / "release"
    relay = start_waiting_job(instance, db, prefix, release)
    job_id = relay.job.id
    assert job_id is not None
    rescue = failed_attempt(
        job_id=job_id,
        queue=SLOW_QUEUE,
        attempt=1,
        max_attempts=relay.job.max_attempts,
        error_type=LOST_TYPE,
        message="the test rescues this attempt",
        trace="",
        node_id=instance.node_id,
        relay=None,
        delay=0.0,
        retry_state="available",
    )
    unwritable = dataclasses.replace(rescue, meta_patch={"note": "\x00"})

    # The job's own attempt ends only once the test writes `release`, so
    # only the test's outcome can change the row until then.
    try:
        assert instance.acker.tell(Record(unwritable))
        wait_until(
            lambda: job_state(db, prefix, job_id) == "retryable",
            timeout=RESULT_TIMEOUT,
            message=lambda: f"job {job_id} is {job_state(db, prefix, job_id)}, not retryable",
        )

        # The default backoff of a first attempt is 15 s plus 2 s, with jitter on top.
        assert retry_due_in(db, prefix, job_id) > BASE_DELAY_SECONDS
        row = read_job(db, prefix, job_id)
        assert row["attempt"] == 1
        assert [error["type"] for error in row["errors"]] == [RECORD_FAILED_TYPE]
        assert "note" not in row["meta"]
    finally:
        release.write_text("go\n")
