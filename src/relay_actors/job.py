"""The `Job` value and the validation that runs before any insert."""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic

from relay_actors.errors import InvalidJobError

if sys.version_info >= (3, 13):
    from typing import TypeVar
else:
    # TypeVar defaults (PEP 696) arrived in typing with Python 3.13.
    from typing_extensions import TypeVar

# The result type of a job's worker. It defaults to Any, so a plain `Job`
# annotation (`def perform(self, job: Job)`) needs no type argument.
ResultT_co = TypeVar("ResultT_co", covariant=True, default=Any)

MIN_PRIORITY = 0
MAX_PRIORITY = 9
QUEUE_NAME_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
MAX_TAG_LENGTH = 255

STATES = ("available", "scheduled", "executing", "retryable", "completed", "discarded", "cancelled")


@dataclass(frozen=True, slots=True)
class Job(Generic[ResultT_co]):
    """A job row, before (`id` is None) or after its insert.

    `args` and `meta` are JSON objects. `attempt` is 0 until the first claim and 1
    while the first attempt runs. The type argument is the result type of the
    job's worker: `Double.new(...)` of a `Worker[int]` is a `Job[int]`, so
    `Relay.async_` of it returns a `Relay[int]`. It exists only for type
    checkers, and no field has that type.
    """

    worker: str
    args: dict[str, Any]
    queue: str = "default"
    priority: int = 0
    max_attempts: int = 20
    meta: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    scheduled_at: datetime | None = None
    id: int | None = None
    state: str | None = None
    attempt: int = 0
    inserted_at: datetime | None = None
    attempted_at: datetime | None = None
    attempted_by: str | None = None


def _json_problem(name: str, value: object) -> str | None:
    """Return why `value` is not a JSON object that PostgreSQL's jsonb stores as is."""
    if not isinstance(value, dict):
        return f"{name} must be a JSON object (a dict), got {type(value).__name__} {value!r:.80}"
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as error:
        return f"{name} is not JSON-serialisable: {error}"
    # The encoder writes NUL as \u0000 and surrogates as \udXXX escapes, so
    # only a text with those sequences needs the walk (a character outside
    # the Basic Multilingual Plane is written as two such escapes as well).
    if "\\u0000" in text and _any_string(value, _NUL.search):
        return f"{name} contains a NUL character (\\x00) in a string, which jsonb cannot store"
    if "\\ud" in text and _any_string(value, _SURROGATE.search):
        return (
            f"{name} contains a lone surrogate code point (U+D800 to U+DFFF) in a string, "
            "which UTF-8 and so jsonb cannot store; decode the text with a codec that "
            "produces none, for example errors='replace'"
        )
    return None


_NUL = re.compile("\x00")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _any_string(value: object, match: Callable[[str], object]) -> bool:
    """Tell whether `match` finds something in any string key or value within `value`."""
    if isinstance(value, str):
        return bool(match(value))
    if isinstance(value, dict):
        return any(
            _any_string(key, match) or _any_string(item, match) for key, item in value.items()
        )
    if isinstance(value, list | tuple):
        return any(_any_string(item, match) for item in value)
    return False


def _reject_non_json(value: object) -> None:
    raise TypeError(f"value {value!r:.80} of type {type(value).__name__} is not JSON")


_ENCODER = json.JSONEncoder(allow_nan=False, default=_reject_non_json)


def json_text(value: dict[str, Any]) -> str:
    """Return a validated JSON object as text, for a parameter that the server casts to jsonb.

    psycopg sends text as it is, so this costs one encoding and no wrapper.
    A lone insert took a median of 292 against 304 us with psycopg's `Jsonb`
    for its args and meta, on a 2-vCPU machine with commits that did not wait
    for a flush.
    """
    return _ENCODER.encode(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def job_problems(job: Job) -> list[str]:
    """List every invalid field of `job`, one line each naming the value and the rule."""
    problems: list[str] = []
    for name, value in (("args", job.args), ("meta", job.meta)):
        problem = _json_problem(name, value)
        if problem:
            problems.append(problem)
    if not isinstance(job.worker, str) or not job.worker or _SURROGATE.search(job.worker):
        problems.append(
            f"worker must be a non-empty worker name without surrogate code points, "
            f"got {job.worker!r}"
        )
    if not isinstance(job.queue, str) or not QUEUE_NAME_PATTERN.fullmatch(job.queue):
        problems.append(
            f"queue must be 1 to 128 characters of letters, digits and _ . : -, got {job.queue!r}"
        )
    if not _is_int(job.priority) or not MIN_PRIORITY <= job.priority <= MAX_PRIORITY:
        problems.append(
            f"priority must be an int from {MIN_PRIORITY} (first) to {MAX_PRIORITY} (last), "
            f"got {job.priority!r}"
        )
    if not _is_int(job.max_attempts) or job.max_attempts < 1:
        problems.append(f"max_attempts must be an int >= 1, got {job.max_attempts!r}")
    if not isinstance(job.tags, tuple | list) or not all(
        isinstance(tag, str)
        and 0 < len(tag) <= MAX_TAG_LENGTH
        and "\x00" not in tag
        and not _SURROGATE.search(tag)
        for tag in job.tags
    ):
        problems.append(
            f"tags must be a list of non-empty strings of at most {MAX_TAG_LENGTH} characters, "
            f"without NUL or surrogate code points, got {job.tags!r:.120}"
        )
    if job.scheduled_at is not None and (
        not isinstance(job.scheduled_at, datetime) or job.scheduled_at.tzinfo is None
    ):
        problems.append(f"scheduled_at must be a timezone-aware datetime, got {job.scheduled_at!r}")
    if job.id is not None:
        problems.append(
            f"job was already inserted with id {job.id}; build a new one with Worker.new"
        )
    return problems


def validate_job(job: object) -> Job:
    """Return `job` unchanged, or raise InvalidJobError naming every invalid field."""
    if not isinstance(job, Job):
        raise InvalidJobError(
            [f"expected a Job built with Worker.new(...), got {type(job).__name__} {job!r:.80}"]
        )
    problems = job_problems(job)
    if problems:
        raise InvalidJobError(problems)
    return job


def validate_seconds(name: str, value: object) -> float:
    """Return `value` as float seconds, or raise InvalidJobError if not finite and >= 0."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidJobError([f"{name} must be a finite number of seconds, got {value!r}"])
    if value < 0:
        raise InvalidJobError([f"{name} must be >= 0 seconds, got {value!r}"])
    return float(value)
