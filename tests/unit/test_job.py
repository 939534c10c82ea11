"""Job validation in `Worker.new`: every invalid field is named, with its value."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from relay_actors import InvalidJobError, Job
from relay_actors.job import validate_job
from tests.workers import QUICK_QUEUE, Echo, Fail


def problems_of(**options: Any) -> tuple[str, ...]:
    """Return the problems that Echo.new reports for `options` (args default to a valid dict)."""
    args = options.pop("args", {"value": 1})
    with pytest.raises(InvalidJobError) as raised:
        Echo.new(args, **options)
    return raised.value.problems


def test_new_builds_valid_job() -> None:
    job = Echo.new({"value": 1})
    assert job == Job(worker="tests.workers.Echo", args={"value": 1}, queue=QUICK_QUEUE)


def test_new_uses_worker_options() -> None:
    assert Fail.new({"message": "x"}).max_attempts == 1


def test_new_options_override_worker() -> None:
    job = Echo.new({"value": 1}, queue="other", priority=9, max_attempts=3, tags=["a", "b"])
    assert (job.queue, job.priority, job.max_attempts, job.tags) == ("other", 9, 3, ("a", "b"))


def test_new_job_is_uninserted() -> None:
    assert Echo.new({"value": 1}).id is None


def test_scheduled_in_sets_aware_time() -> None:
    before = datetime.now(UTC)
    job = Echo.new({"value": 1}, scheduled_in=60)
    assert job.scheduled_at is not None
    assert before + timedelta(seconds=59) < job.scheduled_at < before + timedelta(seconds=61)


def test_astral_character_is_valid() -> None:
    # json writes it as a surrogate pair of escapes, which jsonb accepts.
    job = Echo.new({"value": "\U0001f600"})
    assert job.args == {"value": "\U0001f600"}


INVALID = [
    pytest.param({"args": [1, 2]}, "args", id="args-list"),
    pytest.param({"args": None}, "args", id="args-none"),
    pytest.param({"args": "text"}, "args", id="args-str"),
    pytest.param({"args": {"when": datetime.now(UTC)}}, "args", id="args-datetime"),
    pytest.param({"args": {"value": object()}}, "args", id="args-object"),
    pytest.param({"args": {"value": float("nan")}}, "args", id="args-nan"),
    pytest.param({"args": {"value": "nul \x00"}}, "args", id="args-nul"),
    pytest.param({"args": {"\ud800": None}}, "args", id="args-surrogate-key"),
    pytest.param({"meta": {"list": ["a\udfff"]}}, "meta", id="meta-surrogate-value"),
    pytest.param({"meta": {"value": {1, 2}}}, "meta", id="meta-set"),
    pytest.param({"queue": ""}, "queue", id="queue-empty"),
    pytest.param({"queue": "has space"}, "queue", id="queue-space"),
    pytest.param({"queue": "q" * 129}, "queue", id="queue-too-long"),
    pytest.param({"priority": 10}, "priority", id="priority-10"),
    pytest.param({"priority": -1}, "priority", id="priority-minus-1"),
    pytest.param({"priority": True}, "priority", id="priority-bool"),
    pytest.param({"priority": 1.0}, "priority", id="priority-float"),
    pytest.param({"max_attempts": 0}, "max_attempts", id="max-attempts-0"),
    pytest.param({"max_attempts": -3}, "max_attempts", id="max-attempts-negative"),
    pytest.param({"tags": [1]}, "tags", id="tags-int"),
    pytest.param({"tags": [""]}, "tags", id="tags-empty-str"),
    pytest.param({"tags": ["t" * 256]}, "tags", id="tags-too-long"),
    pytest.param({"tags": ["file-\udcff"]}, "tags", id="tags-surrogate"),
    pytest.param({"scheduled_at": datetime(2030, 1, 1)}, "scheduled_at", id="naive-scheduled-at"),
    pytest.param({"scheduled_at": "2030-01-01"}, "scheduled_at", id="scheduled-at-str"),
    pytest.param({"scheduled_in": -1}, "scheduled_in", id="scheduled-in-negative"),
    pytest.param({"scheduled_in": float("inf")}, "scheduled_in", id="scheduled-in-inf"),
]


@pytest.mark.parametrize(("options", "field"), INVALID)
def test_invalid_field_is_named(options: dict[str, Any], field: str) -> None:
    problems = problems_of(**options)
    assert len(problems) == 1, problems
    assert problems[0].startswith(field), problems


def test_problem_shows_value() -> None:
    [problem] = problems_of(priority=10)
    assert "got 10" in problem


def test_every_invalid_field_named() -> None:
    problems = problems_of(
        args=[1],
        queue="",
        priority=10,
        max_attempts=0,
        tags=[1],
        scheduled_at=datetime(2030, 1, 1),
    )
    named = sorted(problem.split(" ", 1)[0] for problem in problems)
    assert named == ["args", "max_attempts", "priority", "queue", "scheduled_at", "tags"]


def test_error_message_lists_problems() -> None:
    with pytest.raises(InvalidJobError) as raised:
        Echo.new([1], priority=10)  # type: ignore[arg-type]
    assert "args" in str(raised.value)
    assert "priority" in str(raised.value)


def test_scheduled_in_and_at_conflict() -> None:
    with pytest.raises(InvalidJobError, match="not both"):
        Echo.new({"value": 1}, scheduled_in=1, scheduled_at=datetime.now(UTC))


def test_invalid_job_error_is_value_error() -> None:
    assert issubclass(InvalidJobError, ValueError)


def test_validate_rejects_non_job() -> None:
    with pytest.raises(InvalidJobError, match=r"Worker\.new"):
        validate_job({"worker": "tests.workers.Echo"})


def test_validate_rejects_inserted_job() -> None:
    job = dataclasses.replace(Echo.new({"value": 1}), id=5)
    with pytest.raises(InvalidJobError, match="already inserted"):
        validate_job(job)


def test_validate_rejects_empty_worker() -> None:
    job = dataclasses.replace(Echo.new({"value": 1}), worker="")
    with pytest.raises(InvalidJobError, match="worker"):
        validate_job(job)
