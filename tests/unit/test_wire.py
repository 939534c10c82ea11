"""Relay notification envelopes: packing entries into payloads and parsing them back."""

from __future__ import annotations

import base64
import json
import os
import uuid
from typing import Any

import pytest

from relay_actors import codec
from relay_actors.results import Error, JobError, Ok, Reason
from relay_actors.wire import (
    MAX_PAYLOAD_BYTES,
    Delivery,
    Entry,
    EnvelopeError,
    delivery_from_row,
    pack_payloads,
    parse_payload,
    to_await_result,
)

# PostgreSQL rejects a NOTIFY payload of 8000 bytes or more.
NOTIFY_PAYLOAD_LIMIT = 8000
MAILBOX = "urn:uuid:" + str(uuid.UUID(int=1))


def make_entry(
    job_id: int, payload: bytes | None, *, status: str = "ok", final: bool = True
) -> Entry:
    delivery = Delivery(job_id, status, 1, final, payload)
    return Entry(MAILBOX, str(uuid.UUID(int=job_id)), delivery)


def parse_all(payloads: list[str]) -> list[Entry]:
    return [entry for payload in payloads for entry in parse_payload(payload)]


def test_small_entries_share_payload() -> None:
    entries = [(make_entry(i, codec.encode(i)), True) for i in range(1, 11)]
    assert len(pack_payloads(entries)) == 1


def test_entries_round_trip() -> None:
    entries = [(make_entry(i, codec.encode(i)), True) for i in range(1, 11)]
    assert parse_all(pack_payloads(entries)) == [entry for entry, _ in entries]


def test_many_entries_split_under_limit() -> None:
    entries = [(make_entry(i, os.urandom(1_000)), True) for i in range(1, 201)]
    payloads = pack_payloads(entries)
    assert len(payloads) > 1
    for payload in payloads:
        assert len(payload.encode()) < NOTIFY_PAYLOAD_LIMIT


def test_split_entries_keep_order() -> None:
    entries = [(make_entry(i, os.urandom(1_000)), True) for i in range(1, 201)]
    parsed = parse_all(pack_payloads(entries))
    assert [entry.delivery.job_id for entry in parsed] == list(range(1, 201))


def test_split_entries_keep_payloads() -> None:
    entries = [(make_entry(i, os.urandom(1_000)), True) for i in range(1, 201)]
    parsed = parse_all(pack_payloads(entries))
    assert [entry.delivery.payload for entry in parsed] == [
        entry.delivery.payload for entry, _ in entries
    ]


@pytest.mark.parametrize("size", range(5_600, 6_100, 7))
def test_payload_sizes_near_limit(size: int) -> None:
    entries = [
        (make_entry(1, os.urandom(size)), True),
        (make_entry(2, os.urandom(size // 3)), True),
    ]
    for payload in pack_payloads(entries):
        assert len(payload.encode()) <= MAX_PAYLOAD_BYTES


def test_too_large_entry_goes_without_payload() -> None:
    entry = make_entry(1, os.urandom(7_000))
    [parsed] = parse_all(pack_payloads([(entry, True)]))
    assert parsed.delivery.payload is None


def test_too_large_entry_is_read_from_row() -> None:
    entry = make_entry(1, os.urandom(7_000))
    [parsed] = parse_all(pack_payloads([(entry, True)]))
    assert parsed.delivery.in_row


def test_too_large_entry_fits_limit() -> None:
    payloads = pack_payloads([(make_entry(1, os.urandom(7_000)), True)])
    assert len(payloads[0].encode()) < NOTIFY_PAYLOAD_LIMIT


def test_large_entry_leaves_neighbours_inline() -> None:
    entries = [
        (make_entry(1, b"small"), True),
        (make_entry(2, os.urandom(7_000)), True),
        (make_entry(3, b"small too"), True),
    ]
    parsed = parse_all(pack_payloads(entries))
    assert [entry.delivery.payload for entry in parsed] == [b"small", None, b"small too"]


def test_inline_off_sends_no_payload() -> None:
    [parsed] = parse_all(pack_payloads([(make_entry(1, b"secret"), False)]))
    assert parsed.delivery.payload is None


def test_inline_off_is_read_from_row() -> None:
    [parsed] = parse_all(pack_payloads([(make_entry(1, b"secret"), False)]))
    assert parsed.delivery.in_row


@pytest.mark.parametrize(
    "status", [Reason.SNOOZED, Reason.DISCARDED, Reason.CANCELLED, Reason.RESULT_TOO_LARGE]
)
def test_reason_entry_needs_no_row(status: Reason) -> None:
    [parsed] = parse_all(pack_payloads([(make_entry(1, None, status=status.value), True)]))
    assert not parsed.delivery.in_row


def test_empty_entries_give_no_payloads() -> None:
    assert pack_payloads([]) == []


def test_final_flag_round_trips() -> None:
    [parsed] = parse_all(pack_payloads([(make_entry(1, b"x", status="error", final=False), True)]))
    assert parsed.delivery.final is False


def _payload(*entries: Any) -> str:
    return "1" + json.dumps(list(entries))


VALID_FIELDS = [MAILBOX, "ref", 1, "ok", 1, 1, base64.b64encode(b"x").decode()]


def _with(index: int, value: Any) -> str:
    fields = list(VALID_FIELDS)
    fields[index] = value
    return _payload(fields)


def test_valid_fields_parse() -> None:
    [entry] = parse_payload(_payload(VALID_FIELDS))
    assert entry.delivery.payload == b"x"


MALFORMED = [
    pytest.param("", id="empty"),
    pytest.param("2[]", id="unknown-version"),
    pytest.param("[]", id="no-version"),
    pytest.param("1", id="version-only"),
    pytest.param("1[", id="invalid-json"),
    pytest.param("1{}", id="object-not-array"),
    pytest.param("1" + "[" * 100_000 + "]" * 100_000, id="deep-json"),
    pytest.param(_payload(1), id="entry-not-array"),
    pytest.param(_payload(VALID_FIELDS[:6]), id="six-fields"),
    pytest.param(_payload([*VALID_FIELDS, None]), id="eight-fields"),
    pytest.param(_with(0, 5), id="mailbox-not-str"),
    pytest.param(_with(1, None), id="ref-not-str"),
    pytest.param(_with(2, "1"), id="job-id-str"),
    pytest.param(_with(2, -1), id="job-id-negative"),
    pytest.param(_with(2, True), id="job-id-bool"),
    pytest.param(_with(2, 1.5), id="job-id-float"),
    pytest.param(_with(3, "exploded"), id="unknown-status"),
    pytest.param(_with(3, "timeout"), id="timeout-status"),
    pytest.param(_with(4, None), id="attempt-null"),
    pytest.param(_with(5, "yes"), id="final-str"),
    pytest.param(_with(6, 12), id="payload-int"),
    pytest.param(_with(6, "not base64!"), id="payload-not-base64"),
]


@pytest.mark.parametrize("payload", MALFORMED)
def test_malformed_payload_raises(payload: str) -> None:
    with pytest.raises(EnvelopeError):
        parse_payload(payload)


def test_envelope_error_is_value_error() -> None:
    assert issubclass(EnvelopeError, ValueError)


def test_row_without_outcome_has_no_delivery() -> None:
    assert delivery_from_row(1, "executing", None, None, 1) is None


def test_completed_row_is_final() -> None:
    delivery = delivery_from_row(1, "completed", "ok", codec.encode(5), 1)
    assert delivery is not None
    assert delivery.final


def test_retryable_row_is_not_final() -> None:
    delivery = delivery_from_row(1, "retryable", "error", b"", 1)
    assert delivery is not None
    assert not delivery.final


def test_ok_delivery_decodes_value() -> None:
    assert to_await_result(Delivery(1, "ok", 1, True, codec.encode([1, "a"]))) == Ok([1, "a"])


def test_error_delivery_decodes_job_error() -> None:
    job_error = JobError("builtins.ValueError", "boom", "trace", 2, "node-1")
    result = to_await_result(Delivery(1, "error", 2, False, codec.encode(job_error.to_wire())))
    assert result == Error(job_error)


def test_undecodable_value_gives_reason() -> None:
    assert to_await_result(Delivery(1, "ok", 1, True, b"\x01garbage")) == Error(Reason.UNDECODABLE)


def test_malformed_job_error_is_undecodable() -> None:
    result = to_await_result(Delivery(1, "error", 1, True, codec.encode({"type": "x"})))
    assert result == Error(Reason.UNDECODABLE)


@pytest.mark.parametrize(
    "reason", [Reason.SNOOZED, Reason.DISCARDED, Reason.CANCELLED, Reason.RESULT_TOO_LARGE]
)
def test_reason_delivery_gives_reason(reason: Reason) -> None:
    assert to_await_result(Delivery(1, reason.value, 1, True)) == Error(reason)
