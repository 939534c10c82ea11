"""`Worker` base class and the registry that maps worker names to classes.

A node finds a job's worker only in this registry, which contains the classes its
process has imported. A row never makes the node import anything.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from relay_actors.backoff import default_backoff
from relay_actors.errors import InvalidJobError, InvalidWorkerError
from relay_actors.job import Job, validate_job, validate_seconds
from relay_actors.markers import Cancel, Discard, Snooze

T = TypeVar("T")

logger = logging.getLogger("relay_actors.worker")

_registry: dict[str, type[Worker[Any]]] = {}
_registry_lock = threading.Lock()


class Worker(Generic[T]):
    """Base class of job workers.

    Subclass it with class options and define `perform`::

        class Double(Worker[int], queue="math", max_attempts=3):
            def perform(self, job: Job) -> int:
                return job.args["int"] * 2

    `perform` runs on an executor thread of a node that runs the queue. It may
    return a value for the caller, or `Snooze`, `Cancel` or `Discard`; an
    exception fails the attempt. One worker object is made per attempt.

    Class options: `queue`, `max_attempts`, `priority` (0 runs first, 9
    last) and `timeout` (seconds an attempt may run before it fails).
    """

    name: ClassVar[str] = ""
    queue: ClassVar[str] = "default"
    max_attempts: ClassVar[int] = 20
    priority: ClassVar[int] = 0
    timeout: ClassVar[float | None] = None

    cancellation: threading.Event
    """Set when the job is cancelled or overran its timeout; a long job may check it."""

    def __init__(self) -> None:
        self.cancellation = threading.Event()

    def __init_subclass__(
        cls,
        *,
        queue: str | None = None,
        max_attempts: int | None = None,
        priority: int | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        if timeout is not None:
            if (
                isinstance(timeout, bool)
                or not isinstance(timeout, int | float)
                or not math.isfinite(timeout)
                or timeout <= 0
            ):
                raise InvalidWorkerError(
                    f"worker {cls.__qualname__} has invalid timeout {timeout!r}: "
                    "give a number of seconds > 0, or None for no timeout"
                )
            cls.timeout = float(timeout)
        if queue is not None:
            cls.queue = queue
        if max_attempts is not None:
            cls.max_attempts = max_attempts
        if priority is not None:
            cls.priority = priority
        probe = Job(
            worker="probe",
            args={},
            queue=cls.queue,
            max_attempts=cls.max_attempts,
            priority=cls.priority,
        )
        try:
            validate_job(probe)
        except InvalidJobError as error:
            raise InvalidWorkerError(
                f"worker {cls.__qualname__} has invalid options: {error}"
            ) from None
        cls.name = worker_name(cls)
        register_worker(cls)

    def cancelled(self) -> bool:
        """Tell whether the running job was cancelled or overran its timeout."""
        return self.cancellation.is_set()

    def perform(self, job: Job) -> T | Snooze | Cancel | Discard:
        raise NotImplementedError(f"worker {self.name} must define perform(self, job)")

    def backoff(self, job: Job) -> float:
        """Return the delay in seconds before the next attempt after `job` failed."""
        return default_backoff(job.attempt)

    @classmethod
    def new(
        cls,
        args: dict[str, Any],
        *,
        queue: str | None = None,
        priority: int | None = None,
        max_attempts: int | None = None,
        scheduled_in: float | None = None,
        scheduled_at: datetime | None = None,
        meta: dict[str, Any] | None = None,
        tags: list[str] | tuple[str, ...] | None = None,
    ) -> Job[T]:
        """Build an uninserted job for this worker, raising InvalidJobError if invalid.

        The job's type argument is the worker's result type, so type checkers
        carry it through `Relay.async_` and `Relay.await_`.
        """
        if scheduled_in is not None and scheduled_at is not None:
            both = f"scheduled_in ({scheduled_in!r}) and scheduled_at ({scheduled_at!r})"
            raise InvalidJobError([f"give one of {both}, not both"])
        if scheduled_in is not None:
            delay = validate_seconds("scheduled_in", scheduled_in)
            scheduled_at = datetime.now(UTC) + timedelta(seconds=delay)
        job: Job[T] = Job(
            worker=cls.name,
            args=args,
            queue=cls.queue if queue is None else queue,
            priority=cls.priority if priority is None else priority,
            max_attempts=cls.max_attempts if max_attempts is None else max_attempts,
            meta={} if meta is None else meta,
            tags=_tag_tuple(tags),
            scheduled_at=scheduled_at,
        )
        return validate_job(job)


def _tag_tuple(tags: object) -> Any:
    """Return list or tuple tags as a tuple, and anything else unchanged for validation to name."""
    if tags is None:
        return ()
    if isinstance(tags, list | tuple):
        return tuple(tags)
    return tags


def worker_name(cls: type) -> str:
    """Return the stable name of a worker class: the module it imports from, and its qualname.

    A class defined in a script run as `__main__` gets the module name the script
    has when imported from `sys.path`. A class defined inside a function is
    rejected, because no other process could know its name.
    """
    if "<locals>" in cls.__qualname__:
        raise InvalidWorkerError(
            f"worker {cls.__qualname__} is defined inside a function; define worker classes at "
            "module level so that every node can import them under the same name"
        )
    module = cls.__module__
    if module == "__main__":
        module = _main_module_name()
    return f"{module}.{cls.__qualname__}"


def _main_module_name() -> str:
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)
    path = getattr(main, "__file__", None)
    if path is None:
        raise InvalidWorkerError(
            "workers defined in an interactive session have no importable name; "
            "define them in a module that nodes can import"
        )
    script = Path(path).resolve().with_suffix("")
    for entry in sys.path:
        base = Path(entry or ".").resolve()
        try:
            parts = script.relative_to(base).parts
        except ValueError:
            continue
        if parts and all(part.isidentifier() for part in parts):
            return ".".join(parts)
    raise InvalidWorkerError(
        f"the script {path} that defines this worker is not importable from sys.path; "
        "move the worker into a module that nodes can import"
    )


def register_worker(cls: type[Worker[Any]]) -> None:
    with _registry_lock:
        previous = _registry.get(cls.name)
        _registry[cls.name] = cls
    if previous is not None and previous is not cls:
        logger.debug(
            "worker %s registered again; the newest class replaces the previous one",
            cls.name,
            extra={"action": "worker_replaced"},
        )


def lookup_worker(name: str) -> type[Worker[Any]] | None:
    """Return the registered worker class called `name`, or None if this process has none."""
    with _registry_lock:
        return _registry.get(name)


def registered_worker_names() -> list[str]:
    with _registry_lock:
        return sorted(_registry)
