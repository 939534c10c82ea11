"""Options of the Relay plugin, which an instance needs to insert and await relays."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from relay_actors.errors import ConfigurationError

DEFAULT_MAX_RESULT_BYTES = 8192


@dataclass(frozen=True, slots=True)
class RelayPlugin:
    """Relay options; they travel in each job's meta, so the executing node applies them.

    Attributes:
        max_result_bytes: limit on a result's compressed encoding, in bytes.
        inline_results: send results inside notifications; when false, callers
            read each result from the job's row, which table privileges protect.
        tracebacks: include the remote traceback in a `JobError`; when false,
            callers get the type and message only (the row's errors keep it).
    """

    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    inline_results: bool = True
    tracebacks: bool = True

    def __post_init__(self) -> None:
        limit = self.max_result_bytes
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigurationError(
                f"invalid max_result_bytes {limit!r}: give a positive number of bytes"
            )
        for name in ("inline_results", "tracebacks"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(
                    f"invalid {name} {getattr(self, name)!r}: give True or False"
                )

    def meta_options(self) -> dict[str, Any]:
        """Return the options that differ from their defaults, for a job's relay meta.

        The executing node reads a missing option as its default, so a job
        inserted with the default options carries none of them. Its row, which
        is written three times, stays narrower.
        """
        options: dict[str, Any] = {}
        if self.max_result_bytes != DEFAULT_MAX_RESULT_BYTES:
            options["max_bytes"] = self.max_result_bytes
        if not self.inline_results:
            options["inline"] = False
        if not self.tracebacks:
            options["tracebacks"] = False
        return options
