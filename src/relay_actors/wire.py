"""Relay notifications: the envelope that carries results to a caller's node.

A payload is the envelope version as one character, then a JSON array of
entries, one per result::

    1[["<mailbox urn>", "<ref>", <job id>, "<status>", <attempt>, <final>, "<base64>"], ...]

`final` is 1 for an outcome that never changes, else 0. When the nodes share
a secret, each entry has an eighth field: the base64 of the first 16 bytes of
the HMAC-SHA256, keyed by the secret, of the JSON text of the first seven.

The base64 field contains the encoded value (status "ok") or encoded `JobError`
(status "error"). It is null when the result is read from the row instead:
when it does not fit the payload, or when inline results are off.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from relay_actors import codec
from relay_actors.results import Error, JobError, Ok, Reason

ENVELOPE_VERSION = "1"
SUPPORTED_ENVELOPE_VERSIONS = frozenset({ENVELOPE_VERSION})
# PostgreSQL rejects NOTIFY payloads of 8000 bytes or more; keep a margin.
MAX_PAYLOAD_BYTES = 7900
# Bytes of the HMAC-SHA256 digest kept as an entry's signature (128 bits).
SIGNATURE_BYTES = 16

STATUS_OK = "ok"
STATUS_ERROR = "error"
STATUSES = frozenset(
    {
        STATUS_OK,
        STATUS_ERROR,
        Reason.SNOOZED.value,
        Reason.DISCARDED.value,
        Reason.CANCELLED.value,
        Reason.RESULT_TOO_LARGE.value,
    }
)
FINAL_STATES = frozenset({"completed", "discarded", "cancelled"})


class EnvelopeError(ValueError):
    """A relay notification payload is malformed."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """One job's outcome as recorded for an attempt.

    `payload` is the encoded value or `JobError`; None with `in_row` true means
    the caller must read it from the job's row.
    """

    job_id: int
    status: str
    attempt: int
    final: bool
    payload: bytes | None = None
    in_row: bool = False

    def supersedes(self, other: Delivery) -> bool:
        """Tell whether this delivery should replace `other` for the same ref."""
        if other.final:
            return False
        return self.final or self.attempt >= other.attempt


@dataclass(frozen=True, slots=True)
class Entry:
    """One result addressed to a caller's mailbox."""

    mailbox: str
    ref: str
    delivery: Delivery
    signature: str | None = None


def _fields(entry: Entry, inline: bool) -> list[Any]:
    delivery = entry.delivery
    encoded = None
    if inline and delivery.payload is not None:
        encoded = base64.b64encode(delivery.payload).decode("ascii")
    return [
        entry.mailbox,
        entry.ref,
        delivery.job_id,
        delivery.status,
        delivery.attempt,
        1 if delivery.final else 0,
        encoded,
    ]


def _dumps(fields: list[Any]) -> str:
    return json.dumps(fields, separators=(",", ":"))


def _signature(fields: list[Any], secret: bytes) -> str:
    digest = hmac.new(secret, _dumps(fields).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest[:SIGNATURE_BYTES]).decode("ascii")


def _entry_json(entry: Entry, inline: bool, secret: bytes | None) -> str:
    fields = _fields(entry, inline)
    if secret is not None:
        fields.append(_signature(fields, secret))
    return _dumps(fields)


def control_payload(job_id: int, secret: bytes | None) -> str:
    """Return the control notification that cancels `job_id`, signed when there is a secret."""
    text = f"cancel:{job_id}"
    if secret is None:
        return text
    return f"{text}:{_signature([text], secret)}"


def parse_control(payload: str, secret: bytes | None) -> int | None:
    """Return the job id of a valid cancel notification, or None if malformed or forged."""
    command, _, rest = payload.partition(":")
    job_text, _, signature = rest.partition(":")
    if command != "cancel" or not job_text.isascii() or not job_text.isdigit():
        return None
    if secret is not None:
        expected = _signature([f"cancel:{job_text}"], secret)
        if not signature.isascii() or not hmac.compare_digest(expected, signature):
            return None
    return int(job_text)


def verify_entry(entry: Entry, secret: bytes) -> bool:
    """Tell whether the entry carries a valid HMAC-SHA256 signature made with `secret`."""
    if entry.signature is None or not entry.signature.isascii():
        return False
    expected = _signature(_fields(entry, inline=entry.delivery.payload is not None), secret)
    return hmac.compare_digest(expected, entry.signature)


def pack_payloads(entries: list[tuple[Entry, bool]], secret: bytes | None = None) -> list[str]:
    """Pack (entry, inline) pairs into as few NOTIFY payloads as fit the size limit.

    An entry too large to travel inline even alone is sent without its payload,
    so its caller reads the row. With `secret`, each entry is signed.
    """
    return [payload for payload, _ in pack_payloads_with_ids(entries, secret)]


def pack_payloads_with_ids(
    entries: list[tuple[Entry, bool]], secret: bytes | None = None
) -> list[tuple[str, list[tuple[int, int]]]]:
    """Pack entries as `pack_payloads` does; return payloads with their (job id, attempt) pairs."""
    packed: list[tuple[str, list[tuple[int, int]]]] = []
    parts: list[str] = []
    ids: list[tuple[int, int]] = []
    size = len(ENVELOPE_VERSION) + 2
    for entry, inline in entries:
        part = _entry_json(entry, inline, secret)
        if len(part) + len(ENVELOPE_VERSION) + 2 > MAX_PAYLOAD_BYTES:
            part = _entry_json(entry, False, secret)
        if parts and size + len(part) + 1 > MAX_PAYLOAD_BYTES:
            packed.append((ENVELOPE_VERSION + "[" + ",".join(parts) + "]", ids))
            parts, ids = [], []
            size = len(ENVELOPE_VERSION) + 2
        parts.append(part)
        ids.append((entry.delivery.job_id, entry.delivery.attempt))
        size += len(part) + 1
    if parts:
        packed.append((ENVELOPE_VERSION + "[" + ",".join(parts) + "]", ids))
    return packed


def parse_payload(payload: str) -> list[Entry]:
    """Return the entries of a relay notification, raising EnvelopeError if malformed."""
    if not payload or payload[0] not in SUPPORTED_ENVELOPE_VERSIONS:
        raise EnvelopeError(f"unknown envelope version {payload[:1]!r}")
    try:
        items = json.loads(payload[1:])
    except (ValueError, RecursionError) as error:
        raise EnvelopeError(f"envelope is not valid JSON: {error}") from None
    if not isinstance(items, list):
        raise EnvelopeError("envelope must be a JSON array of entries")
    return [_parse_entry(item) for item in items]


def _parse_entry(item: Any) -> Entry:
    if not isinstance(item, list) or len(item) not in (7, 8):
        raise EnvelopeError("entry must be an array of 7 fields, or 8 when signed")
    mailbox, ref, job_id, status, attempt, final, encoded = item[:7]
    signature = item[7] if len(item) == 8 else None
    if len(item) == 8 and not isinstance(signature, str):
        raise EnvelopeError("entry signature must be base64 text")
    if not isinstance(mailbox, str) or not isinstance(ref, str):
        raise EnvelopeError("entry mailbox and ref must be strings")
    for name, number in (("job id", job_id), ("attempt", attempt), ("final", final)):
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise EnvelopeError(f"entry {name} must be an int >= 0")
    if not isinstance(status, str) or status not in STATUSES:
        raise EnvelopeError(f"unknown entry status {status!r:.40}")
    payload = None
    if encoded is not None:
        if not isinstance(encoded, str):
            raise EnvelopeError("entry payload must be base64 text or null")
        try:
            payload = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as error:
            raise EnvelopeError(f"entry payload is not valid base64: {error}") from None
    in_row = payload is None and status in (STATUS_OK, STATUS_ERROR)
    delivery = Delivery(job_id, status, attempt, bool(final), payload, in_row)
    return Entry(mailbox, ref, delivery, signature)


def delivery_from_row(
    job_id: int, state: str, outcome: str | None, result: bytes | None, attempt: int
) -> Delivery | None:
    """Return the delivery recorded on a job row, or None if no attempt has finished."""
    if outcome is None or outcome not in STATUSES:
        return None
    return Delivery(job_id, outcome, attempt, state in FINAL_STATES, result, in_row=False)


def to_await_result(delivery: Delivery) -> Ok[Any] | Error:
    """Decode a delivery into the caller's result; an undecodable value is Error("undecodable")."""
    status = delivery.status
    if status == STATUS_OK:
        try:
            return Ok(codec.decode(delivery.payload or b""))
        except codec.DecodeError:
            return Error(Reason.UNDECODABLE)
    if status == STATUS_ERROR:
        try:
            return Error(JobError.from_wire(codec.decode(delivery.payload or b"")))
        except (codec.DecodeError, ValueError):
            return Error(Reason.UNDECODABLE)
    return Error(Reason(status))
