"""Await results: `Ok`, `Error`, `unwrap()` and the error hierarchy."""

from __future__ import annotations

import dataclasses

import pytest

from relay_actors import (
    ConfigurationError,
    Error,
    InstanceNotFoundError,
    InvalidJobError,
    JobCancelled,
    JobDiscarded,
    JobError,
    JobFailed,
    JobNotFound,
    JobSnoozed,
    Ok,
    Reason,
    RelayError,
    RelayNotCommitted,
    RelayTimeout,
    ResultTooLarge,
    ResultUndecodable,
)

JOB_ERROR = JobError("builtins.ValueError", "boom", "Traceback ...", 2, "node-1-abcd0123")

REASON_ERRORS = [
    (Reason.TIMEOUT, RelayTimeout),
    (Reason.SNOOZED, JobSnoozed),
    (Reason.DISCARDED, JobDiscarded),
    (Reason.CANCELLED, JobCancelled),
    (Reason.RESULT_TOO_LARGE, ResultTooLarge),
    (Reason.NOT_FOUND, JobNotFound),
    (Reason.UNDECODABLE, ResultUndecodable),
]


def test_ok_unwrap_returns_value() -> None:
    assert Ok(5).unwrap() == 5


def test_ok_none_unwraps_none() -> None:
    assert Ok(None).unwrap() is None


def test_ok_is_ok() -> None:
    assert Ok(1).ok


def test_error_is_not_ok() -> None:
    assert not Error(Reason.TIMEOUT).ok


@pytest.mark.parametrize(
    ("reason", "exception"), REASON_ERRORS, ids=[r.value for r, _ in REASON_ERRORS]
)
def test_unwrap_raises_reason_error(reason: Reason, exception: type[RelayError]) -> None:
    with pytest.raises(exception):
        Error(reason).unwrap()


def test_every_reason_has_error() -> None:
    assert {reason for reason, _ in REASON_ERRORS} == set(Reason)


def test_unwrap_job_error_raises_failed() -> None:
    with pytest.raises(JobFailed) as raised:
        Error(JOB_ERROR).unwrap()
    assert raised.value.error is JOB_ERROR


def test_job_failed_message_names_error() -> None:
    message = str(JobFailed(JOB_ERROR))
    assert "builtins.ValueError" in message
    assert "boom" in message
    assert "attempt 2" in message


def test_reason_values_are_strings() -> None:
    assert [reason.value for reason in Reason] == [
        "snoozed",
        "discarded",
        "cancelled",
        "result_too_large",
        "timeout",
        "not_found",
        "undecodable",
    ]


def test_reason_equals_its_string() -> None:
    assert Reason.TIMEOUT == "timeout"


def test_timeout_is_timeout_error() -> None:
    assert issubclass(RelayTimeout, TimeoutError)


def test_invalid_job_is_value_error() -> None:
    assert issubclass(InvalidJobError, ValueError)


@pytest.mark.parametrize(
    "exception",
    [
        ConfigurationError,
        InstanceNotFoundError,
        InvalidJobError,
        RelayNotCommitted,
        RelayTimeout,
        JobFailed,
        JobSnoozed,
        JobDiscarded,
        JobCancelled,
        ResultTooLarge,
        JobNotFound,
        ResultUndecodable,
    ],
)
def test_errors_are_relay_errors(exception: type[Exception]) -> None:
    assert issubclass(exception, RelayError)


def test_results_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Ok(1).value = 2  # type: ignore[misc]


def test_job_error_is_not_exception() -> None:
    assert not isinstance(JOB_ERROR, BaseException)


def test_job_error_wire_round_trip() -> None:
    assert JobError.from_wire(JOB_ERROR.to_wire()) == JOB_ERROR


@pytest.mark.parametrize(
    "data",
    [
        None,
        {"type": "x"},
        {**JOB_ERROR.to_wire(), "attempt": "2"},
        {**JOB_ERROR.to_wire(), "attempt": True},
        {**JOB_ERROR.to_wire(), "message": None},
    ],
    ids=["none", "missing-fields", "attempt-str", "attempt-bool", "message-none"],
)
def test_job_error_rejects_bad_wire(data: object) -> None:
    with pytest.raises(ValueError):
        JobError.from_wire(data)


def test_results_support_match() -> None:
    match Error(JOB_ERROR):
        case Ok(value):
            outcome = f"ok {value}"
        case Error(JobError(type=type_name)):
            outcome = f"failed {type_name}"
        case Error(reason):
            outcome = f"reason {reason}"
    assert outcome == "failed builtins.ValueError"
