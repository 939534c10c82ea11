"""Exceptions raised by relay_actors.

The errors relay_actors raises itself are `RelayError`s; errors of the database
driver (psycopg) pass through unchanged. Awaiting never raises for an outcome of
the job: `await_` returns an `Error` result, and only `unwrap()` on that result
raises one of the exceptions below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from relay_actors.results import JobError


class RelayError(Exception):
    """Base class of every error relay_actors raises."""


class ConfigurationError(RelayError, ValueError):
    """An option of `start()` or of the command line is invalid or missing."""


class InstanceNotFoundError(RelayError, LookupError):
    """No running instance has the requested name."""


class InstanceForkedError(RelayError):
    """An instance started before `fork()` was used in the child process."""


class InvalidJobError(RelayError, ValueError):
    """A job failed validation, so nothing was inserted.

    Attributes:
        problems: one human-readable line per invalid field, naming the value.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__("invalid job: " + "; ".join(self.problems))


class InvalidWorkerError(RelayError, TypeError):
    """A worker class cannot be registered under a stable name."""


class RelayNotCommitted(RelayError):
    """The relay's job was inserted in a transaction that is still open."""


class RelayTimeout(RelayError, TimeoutError):
    """No result arrived before the await's deadline; the job keeps running."""


class JobFailed(RelayError):
    """The job raised, or its result could not be encoded.

    Attributes:
        error: the `JobError` recorded for the attempt.
    """

    def __init__(self, error: JobError) -> None:
        self.error = error
        super().__init__(f"job failed on attempt {error.attempt}: {error.type}: {error.message}")


class JobSnoozed(RelayError):
    """The job returned `Snooze` and was rescheduled."""


class JobDiscarded(RelayError):
    """The job returned `Discard`."""


class JobCancelled(RelayError):
    """The job was cancelled."""


class ResultTooLarge(RelayError):
    """The job's encoded result exceeded `max_result_bytes`; the job completed."""


class JobNotFound(RelayError):
    """The job does not exist: its insert rolled back or the row was pruned."""


class ResultUndecodable(RelayError):
    """The result contains a type the awaiting process cannot decode."""
