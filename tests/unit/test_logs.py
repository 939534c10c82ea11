"""Unit tests of relay_actors.logs.ActionFilter."""

from __future__ import annotations

import logging

import pytest

from relay_actors.logs import ActionFilter


def make_record(action: str | None) -> logging.LogRecord:
    record = logging.LogRecord("relay_actors.test", logging.INFO, __file__, 1, "line", (), None)
    if action is not None:
        record.action = action
    return record


def test_filter_passes_listed_actions() -> None:
    only = ActionFilter("job_failed", "listener_down")

    assert only.filter(make_record("job_failed"))
    assert only.filter(make_record("listener_down"))
    assert not only.filter(make_record("job_finished"))
    assert not only.filter(make_record(None))


def test_filter_exclude_drops_listed_actions() -> None:
    without = ActionFilter("job_finished", exclude=True)

    assert not without.filter(make_record("job_finished"))
    assert without.filter(make_record("job_failed"))
    assert without.filter(make_record(None))


def test_filter_on_handler_selects_child_loggers() -> None:
    passed_messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            passed_messages.append(record.getMessage())

    handler = Collect()
    handler.addFilter(ActionFilter("listener_down"))
    parent = logging.getLogger("relay_actors")
    parent.addHandler(handler)
    child = logging.getLogger("relay_actors.listener")
    previous = child.level
    child.setLevel(logging.INFO)
    try:
        child.warning("lost", extra={"action": "listener_down"})
        child.info("connected", extra={"action": "listener_connected"})
    finally:
        parent.removeHandler(handler)
        child.setLevel(previous)

    assert passed_messages == ["lost"]


def test_filter_rejects_bad_actions() -> None:
    with pytest.raises(ValueError, match="at least one action"):
        ActionFilter()
    with pytest.raises(TypeError, match="non-empty strings"):
        ActionFilter("job_failed", "")
