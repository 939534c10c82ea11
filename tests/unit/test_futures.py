"""`CallbackFuture`: callbacks on set, at once when already done, and failures logged."""

from __future__ import annotations

import logging
import threading

import pykka
import pytest

from relay_actors.actors.futures import CallbackFuture


def test_callback_runs_on_set() -> None:
    future: CallbackFuture[int] = CallbackFuture()
    calls: list[int] = []
    future.add_done_callback(lambda: calls.append(future.get(timeout=0)))
    assert calls == []
    assert not future.done()

    future.set(7)

    assert calls == [7]
    assert future.done()


def test_callback_runs_at_once_when_done() -> None:
    future: CallbackFuture[str] = CallbackFuture()
    future.set("ready")
    calls: list[str] = []
    future.add_done_callback(lambda: calls.append(future.get(timeout=0)))
    assert calls == ["ready"]


def test_callback_runs_on_exception() -> None:
    future: CallbackFuture[None] = CallbackFuture()
    calls: list[str] = []
    future.add_done_callback(lambda: calls.append("called"))
    try:
        raise pykka.ActorDeadError("mailbox stopped")
    except pykka.ActorDeadError:
        future.set_exception()
    assert calls == ["called"]
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=0)


def test_callback_runs_on_setting_thread() -> None:
    future: CallbackFuture[None] = CallbackFuture()
    threads: list[str] = []
    future.add_done_callback(lambda: threads.append(threading.current_thread().name))
    setter = threading.Thread(target=future.set, name="setter")
    setter.start()
    setter.join(timeout=5)
    assert threads == ["setter"]


def test_failing_callback_logged(caplog: pytest.LogCaptureFixture) -> None:
    future: CallbackFuture[int] = CallbackFuture()
    later: list[int] = []

    def fail() -> None:
        raise RuntimeError("callback broke")

    future.add_done_callback(fail)
    future.add_done_callback(lambda: later.append(1))
    with caplog.at_level(logging.ERROR, logger="relay_actors.mailbox"):
        future.set(1)

    assert later == [1]
    assert future.get(timeout=0) == 1
    assert "done callback failed" in caplog.text
    assert "callback broke" in caplog.text


def test_offer_keeps_first_value() -> None:
    future: CallbackFuture[str] = CallbackFuture()
    calls: list[str] = []
    future.add_done_callback(lambda: calls.append(future.get(timeout=0)))

    assert future.offer("from the listener")
    assert not future.offer("from the mailbox")

    assert future.get(timeout=0) == "from the listener"
    assert calls == ["from the listener"]
