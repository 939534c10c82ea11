"""Unit tests of relay_actors.telemetry: attaching, detaching and calling handlers."""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from relay_actors import telemetry
from relay_actors.telemetry import DuplicateHandlerError, Event

OWN_EVENT: Event = ("myapp", "import", "done")

Call = tuple[Event, dict[str, Any], dict[str, Any]]


@pytest.fixture
def handler_id() -> Iterator[Callable[[], str]]:
    """Factory of unique handler ids; every handler attached under them is detached after."""
    handler_ids: list[str] = []

    def make() -> str:
        handler_ids.append(f"test-{secrets.token_hex(4)}")
        return handler_ids[-1]

    yield make
    for name in handler_ids:
        telemetry.detach(name)


def recording(calls: list[Call]) -> telemetry.Handler:
    def handler(event: Event, measurements: dict[str, Any], metadata: dict[str, Any]) -> None:
        calls.append((event, measurements, metadata))

    return handler


def test_attached_handler_receives_event(handler_id: Callable[[], str]) -> None:
    calls: list[Call] = []
    telemetry.attach(handler_id(), [telemetry.JOB_STOP], recording(calls))

    telemetry.execute(telemetry.JOB_STOP, {"duration": 0.5}, {"job_id": 7})

    assert calls == [(telemetry.JOB_STOP, {"duration": 0.5}, {"job_id": 7})]


def test_handler_gets_only_its_events(handler_id: Callable[[], str]) -> None:
    calls: list[Call] = []
    telemetry.attach(handler_id(), [telemetry.JOB_START, OWN_EVENT], recording(calls))

    telemetry.execute(telemetry.JOB_START, {}, {"n": 1})
    telemetry.execute(telemetry.JOB_STOP, {}, {"n": 2})
    telemetry.execute(OWN_EVENT, {}, {"n": 3})

    assert [metadata["n"] for _, _, metadata in calls] == [1, 3]


def test_handlers_run_in_attach_order(handler_id: Callable[[], str]) -> None:
    order: list[str] = []
    first, second = handler_id(), handler_id()
    telemetry.attach(first, [OWN_EVENT], lambda *_: order.append(first))
    telemetry.attach(second, [OWN_EVENT], lambda *_: order.append(second))

    telemetry.execute(OWN_EVENT, {}, {})

    assert order == [first, second]


def test_detach_stops_calls(handler_id: Callable[[], str]) -> None:
    calls: list[Call] = []
    name = handler_id()
    telemetry.attach(name, [telemetry.JOB_STOP], recording(calls))

    assert telemetry.detach(name) is True
    telemetry.execute(telemetry.JOB_STOP, {}, {})

    assert calls == []
    assert telemetry.detach(name) is False


def test_detached_id_can_attach_again(handler_id: Callable[[], str]) -> None:
    calls: list[Call] = []
    name = handler_id()
    telemetry.attach(name, [OWN_EVENT], recording(calls))
    telemetry.detach(name)
    telemetry.attach(name, [OWN_EVENT], recording(calls))

    telemetry.execute(OWN_EVENT, {}, {})

    assert len(calls) == 1


def test_duplicate_id_raises(handler_id: Callable[[], str]) -> None:
    calls: list[Call] = []
    name = handler_id()
    telemetry.attach(name, [OWN_EVENT], recording(calls))

    with pytest.raises(DuplicateHandlerError, match=name):
        telemetry.attach(name, [telemetry.JOB_STOP], lambda *_: None)

    telemetry.execute(OWN_EVENT, {}, {})
    assert len(calls) == 1, "the first handler must stay attached"
    assert not telemetry.enabled(telemetry.JOB_STOP)


def test_duplicate_id_is_value_error(handler_id: Callable[[], str]) -> None:
    name = handler_id()
    telemetry.attach(name, [OWN_EVENT], lambda *_: None)

    with pytest.raises(ValueError, match="already attached"):
        telemetry.attach(name, [OWN_EVENT], lambda *_: None)


def test_raising_handler_detached_and_logged(
    handler_id: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[Call] = []
    broken, healthy = handler_id(), handler_id()

    def fail(*_: object) -> None:
        raise RuntimeError("handler bug")

    telemetry.attach(broken, [OWN_EVENT], fail)
    telemetry.attach(healthy, [OWN_EVENT], recording(calls))

    with caplog.at_level(logging.ERROR, logger="relay_actors.telemetry"):
        telemetry.execute(OWN_EVENT, {}, {})
        telemetry.execute(OWN_EVENT, {}, {})

    assert len(calls) == 2, "the other handler must run both times"
    records = [r for r in caplog.records if r.name == "relay_actors.telemetry"]
    assert len(records) == 1
    assert records[0].action == "telemetry_handler_detached"  # type: ignore[attr-defined]
    assert records[0].handler_id == broken  # type: ignore[attr-defined]
    assert broken in records[0].getMessage()
    assert records[0].exc_info is not None
    assert records[0].exc_info[0] is RuntimeError
    assert telemetry.detach(broken) is False


def test_raising_handler_logged_once_across_threads(
    handler_id: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    threads = 4
    # Every thread enters the handler before any raises, so all of them see it fail.
    barrier = threading.Barrier(threads, timeout=10)

    def fail(*_: object) -> None:
        barrier.wait()
        raise RuntimeError("handler bug")

    telemetry.attach(handler_id(), [OWN_EVENT], fail)
    emitters = [
        threading.Thread(target=telemetry.execute, args=(OWN_EVENT, {}, {})) for _ in range(threads)
    ]
    with caplog.at_level(logging.ERROR, logger="relay_actors.telemetry"):
        for emitter in emitters:
            emitter.start()
        for emitter in emitters:
            emitter.join(timeout=10)

    assert not any(emitter.is_alive() for emitter in emitters)
    assert len([r for r in caplog.records if r.name == "relay_actors.telemetry"]) == 1
    assert not telemetry.enabled(OWN_EVENT)


def test_failed_handler_keeps_new_handler_of_same_id(handler_id: Callable[[], str]) -> None:
    calls: list[Call] = []
    name = handler_id()
    entered, resume = threading.Event(), threading.Event()

    def fail(*_: object) -> None:
        entered.set()
        resume.wait(10)
        raise RuntimeError("handler bug")

    telemetry.attach(name, [OWN_EVENT], fail)
    emitter = threading.Thread(target=telemetry.execute, args=(OWN_EVENT, {}, {}))
    emitter.start()
    assert entered.wait(10)
    # While the old handler runs, the id is detached and attached again.
    telemetry.detach(name)
    telemetry.attach(name, [OWN_EVENT], recording(calls))
    resume.set()
    emitter.join(timeout=10)

    telemetry.execute(OWN_EVENT, {}, {})
    assert len(calls) == 1, "the failure of the old handler must not detach the new one"


def test_no_handler_means_not_enabled() -> None:
    for event in telemetry.EVENTS:
        assert not telemetry.enabled(event), f"a handler leaked from another test: {event}"


def test_execute_without_handlers_returns() -> None:
    telemetry.execute(telemetry.JOB_STOP, {"duration": 1.0}, {})
    telemetry.execute(OWN_EVENT, {}, {})


def test_enabled_only_for_attached_events(handler_id: Callable[[], str]) -> None:
    telemetry.attach(handler_id(), [telemetry.JOB_STOP], lambda *_: None)

    assert telemetry.enabled(telemetry.JOB_STOP)
    assert not telemetry.enabled(telemetry.JOB_START)


def test_attached_context_detaches_on_error(handler_id: Callable[[], str]) -> None:
    name = handler_id()
    with pytest.raises(KeyError), telemetry.attached(name, [OWN_EVENT], lambda *_: None):
        assert telemetry.enabled(OWN_EVENT)
        raise KeyError("body failed")

    assert not telemetry.enabled(OWN_EVENT)
    assert telemetry.detach(name) is False


@pytest.mark.parametrize(
    ("events", "error", "match"),
    [
        (telemetry.JOB_STOP, TypeError, "single name"),
        ([], ValueError, "events is empty"),
        ([("relay_actors", "job", "stopped")], ValueError, "unknown relay_actors telemetry event"),
        (["relay_actors.job.stop"], ValueError, "invalid telemetry event"),
        ([()], ValueError, "invalid telemetry event"),
        ([("myapp", "")], ValueError, "invalid telemetry event"),
    ],
)
def test_attach_rejects_invalid_events(
    handler_id: Callable[[], str], events: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        telemetry.attach(handler_id(), events, lambda *_: None)

    assert not telemetry.enabled(telemetry.JOB_STOP)


def test_attach_rejects_bad_handler_and_id(handler_id: Callable[[], str]) -> None:
    with pytest.raises(TypeError, match="handler must be callable"):
        telemetry.attach(handler_id(), [OWN_EVENT], "print")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="handler_id"):
        telemetry.attach("", [OWN_EVENT], lambda *_: None)


def test_concurrent_attach_and_detach(handler_id: Callable[[], str]) -> None:
    rounds, threads = 200, 4
    calls: list[Call] = []
    errors: list[BaseException] = []
    names = [[handler_id() for _ in range(rounds)] for _ in range(threads)]

    def churn(own: list[str]) -> None:
        try:
            for name in own:
                telemetry.attach(name, [OWN_EVENT], recording(calls))
                telemetry.execute(OWN_EVENT, {}, {})
                assert telemetry.detach(name) is True
        except BaseException as error:  # noqa: BLE001 - reported by the assert below
            errors.append(error)

    workers = [threading.Thread(target=churn, args=(own,)) for own in names]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)

    assert errors == []
    assert not any(worker.is_alive() for worker in workers)
    assert len(calls) >= rounds * threads, "each execute runs at least its own handler"
    assert not telemetry.enabled(OWN_EVENT)
