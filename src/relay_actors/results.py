"""Await results: `Ok`, `Error`, their reasons and the remote `JobError`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Generic, NoReturn, TypeAlias, TypeVar

from relay_actors import errors

T = TypeVar("T")


class Reason(StrEnum):
    """Reason an await returned no value."""

    SNOOZED = "snoozed"
    DISCARDED = "discarded"
    CANCELLED = "cancelled"
    RESULT_TOO_LARGE = "result_too_large"
    TIMEOUT = "timeout"
    NOT_FOUND = "not_found"
    UNDECODABLE = "undecodable"


@dataclass(frozen=True, slots=True)
class JobError:
    """Failure of one attempt, recorded on the node that ran it.

    The exception is kept as text: `type` is the qualified name of the remote
    exception class, which is never imported or instantiated here.
    """

    type: str
    message: str
    traceback: str
    attempt: int
    node: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": self.attempt,
            "node": self.node,
        }

    @classmethod
    def from_wire(cls, data: object) -> JobError:
        """Build a `JobError` from its decoded dict, raising ValueError on a wrong shape."""
        if not isinstance(data, dict):
            raise ValueError(f"job error must be a dict, got {type(data).__name__}")
        try:
            fields = {
                "type": data["type"],
                "message": data["message"],
                "traceback": data["traceback"],
                "attempt": data["attempt"],
                "node": data["node"],
            }
        except KeyError as missing:
            raise ValueError(f"job error is missing the field {missing}") from None
        for name in ("type", "message", "traceback", "node"):
            if not isinstance(fields[name], str):
                raise ValueError(f"job error field {name!r} must be a str")
        if not isinstance(fields["attempt"], int) or isinstance(fields["attempt"], bool):
            raise ValueError("job error field 'attempt' must be an int")
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class Ok(Generic[T]):
    """The job returned `value`."""

    value: T

    def unwrap(self) -> T:
        return self.value

    @property
    def ok(self) -> bool:
        return True


_REASON_ERRORS: dict[Reason, type[errors.RelayError]] = {
    Reason.SNOOZED: errors.JobSnoozed,
    Reason.DISCARDED: errors.JobDiscarded,
    Reason.CANCELLED: errors.JobCancelled,
    Reason.RESULT_TOO_LARGE: errors.ResultTooLarge,
    Reason.TIMEOUT: errors.RelayTimeout,
    Reason.NOT_FOUND: errors.JobNotFound,
    Reason.UNDECODABLE: errors.ResultUndecodable,
}


@dataclass(frozen=True, slots=True)
class Error:
    """The await returned no value: `reason` is a `Reason` or the attempt's `JobError`."""

    reason: Reason | JobError

    def unwrap(self) -> NoReturn:
        """Raise the `RelayError` subclass that matches the reason."""
        if isinstance(self.reason, JobError):
            raise errors.JobFailed(self.reason)
        raise _REASON_ERRORS[self.reason](f"job result: {self.reason.value}")

    @property
    def ok(self) -> bool:
        return False


AwaitResult: TypeAlias = Ok[T] | Error
