"""A logging filter that selects relay_actors log records by their `action`.

Every record that relay_actors logs carries a stable action name in `extra`,
such as `job_failed`, `listener_down` or `record_failed`, so a handler can keep
or drop whole kinds of lines without matching message text:

    import logging
    from relay_actors.logs import ActionFilter

    alerts = logging.StreamHandler()
    alerts.addFilter(ActionFilter("listener_down", "listener_reconnected", "record_failed"))
    logging.getLogger("relay_actors").addHandler(alerts)

Add the filter to a handler, not to a logger: Python applies a logger's filters
only to records logged on that very logger, never to those of its children
such as `relay_actors.listener`.
"""

from __future__ import annotations

import logging


class ActionFilter(logging.Filter):
    """Passes the records whose `action` is one of `actions`, or with `exclude` all others.

    A record without an action (from another library) counts as not listed.
    """

    def __init__(self, *actions: str, exclude: bool = False) -> None:
        if not actions:
            raise ValueError("ActionFilter needs at least one action name, such as 'job_failed'")
        for action in actions:
            if not isinstance(action, str) or not action:
                raise TypeError(f"action names must be non-empty strings, got {action!r}")
        super().__init__()
        self.actions = frozenset(actions)
        self.exclude = exclude

    def filter(self, record: logging.LogRecord) -> bool:
        listed = getattr(record, "action", None) in self.actions
        return listed != self.exclude
