"""Exception types that name why an attempt failed outside the job's own code.

Callers see them only by name, as `JobError.type`, for example
"relay_actors.failures.JobTimeout".
"""

from __future__ import annotations


class UnknownWorker(Exception):
    """The executing node has no registered worker of the job's name."""


class JobTimeout(Exception):
    """The attempt ran longer than its worker's timeout."""


class RecordFailed(Exception):
    """The attempt's outcome could not be written to its row."""


class AttemptLost(Exception):
    """The node running the attempt died, or stopped before the attempt finished."""
