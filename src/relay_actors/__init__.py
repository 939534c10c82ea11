"""relay_actors: persistent distributed tasks on PostgreSQL, with awaitable results.

Insert a job with `Relay.async_`, run it on any node that runs its queue, and
await its result with `Relay.await_`. See the README for a first example.
"""

import logging

from relay_actors import aio
from relay_actors.errors import (
    ConfigurationError,
    InstanceForkedError,
    InstanceNotFoundError,
    InvalidJobError,
    InvalidWorkerError,
    JobCancelled,
    JobDiscarded,
    JobFailed,
    JobNotFound,
    JobSnoozed,
    RelayError,
    RelayNotCommitted,
    RelayTimeout,
    ResultTooLarge,
    ResultUndecodable,
)
from relay_actors.instance import Instance
from relay_actors.instances import get_instance, start
from relay_actors.job import Job
from relay_actors.markers import Cancel, Discard, Snooze
from relay_actors.plugin import RelayPlugin
from relay_actors.relay import Relay
from relay_actors.results import AwaitResult, Error, JobError, Ok, Reason
from relay_actors.worker import Worker

logging.getLogger("relay_actors").addHandler(logging.NullHandler())

__all__ = [
    "AwaitResult",
    "Cancel",
    "ConfigurationError",
    "Discard",
    "Error",
    "Instance",
    "InstanceForkedError",
    "InstanceNotFoundError",
    "InvalidJobError",
    "InvalidWorkerError",
    "Job",
    "JobCancelled",
    "JobDiscarded",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "JobSnoozed",
    "Ok",
    "Reason",
    "Relay",
    "RelayError",
    "RelayNotCommitted",
    "RelayPlugin",
    "RelayTimeout",
    "ResultTooLarge",
    "ResultUndecodable",
    "Snooze",
    "Worker",
    "aio",
    "get_instance",
    "start",
]
