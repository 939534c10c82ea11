"""The tagged binary form of values, before compression.

Lengths and counts are unsigned LEB128 varints. Tags, version 1::

    0x00 None        0x01 False       0x02 True
    0x03 int         varint byte length, then signed big-endian two's complement
    0x04 float       8 bytes, IEEE 754 big-endian (NaN and the infinities included)
    0x05 str         varint byte length, then UTF-8
    0x06 bytes       varint length, then the bytes
    0x07 list        varint count, then the items
    0x08 tuple       varint count, then the items
    0x09 dict        varint count, then key and value for each entry
    0x0a set         varint count, then the items
    0x0b frozenset   varint count, then the items
    0x0c datetime    ISO 8601 text (with its UTC offset when aware) as a str body
    0x0d date        ISO 8601 text as a str body
    0x0e time        ISO 8601 text as a str body
    0x0f timedelta   three int bodies: days, seconds, microseconds
    0x10 Decimal     its text as a str body ("NaN", "Infinity" included)
    0x11 UUID        16 bytes
    0x12 registered  tag as a str body, then the fields dict (dataclass) or value (enum)

A "str body" is a varint byte length and UTF-8 text, without a tag.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import struct
import uuid
from typing import Any

from relay_actors.codec import registry

MAX_DEPTH = 64

(
    NONE,
    FALSE,
    TRUE,
    INT,
    FLOAT,
    STR,
    BYTES,
    LIST,
    TUPLE,
    DICT,
    SET,
    FROZENSET,
    DATETIME,
    DATE,
    TIME,
    TIMEDELTA,
    DECIMAL,
    UUID,
    REGISTERED,
) = range(19)

_FLOAT_FORMAT = struct.Struct(">d")
_MAX_DECIMAL_TEXT = 4096


class EncodeError(TypeError):
    """The value contains a type, or a nesting depth, that the codec does not encode."""


class DecodeError(ValueError):
    """The input is not a valid encoded value of a supported version."""


def _write_varint(out: bytearray, number: int) -> None:
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return


def _write_text(out: bytearray, text: str) -> None:
    encoded = text.encode("utf-8", "surrogatepass")
    _write_varint(out, len(encoded))
    out += encoded


def _write_int_body(out: bytearray, number: int) -> None:
    length = (number.bit_length() + 8) // 8
    _write_varint(out, length)
    out += number.to_bytes(length, "big", signed=True)


def encode_into(out: bytearray, value: Any, depth: int) -> None:
    """Append the tagged form of `value` to `out`, raising EncodeError if unsupported."""
    if depth > MAX_DEPTH:
        raise EncodeError(f"value is nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None:
        out.append(NONE)
    elif kind is bool:
        out.append(TRUE if value else FALSE)
    elif kind is int:
        out.append(INT)
        _write_int_body(out, value)
    elif kind is float:
        out.append(FLOAT)
        out += _FLOAT_FORMAT.pack(value)
    elif kind is str:
        out.append(STR)
        _write_text(out, value)
    elif kind is bytes or kind is bytearray:
        out.append(BYTES)
        _write_varint(out, len(value))
        out += value
    elif kind is list or kind is tuple or kind is set or kind is frozenset:
        out.append(_COLLECTION_TAGS[kind])
        _write_varint(out, len(value))
        for item in value:
            encode_into(out, item, depth + 1)
    elif kind is dict:
        out.append(DICT)
        _write_varint(out, len(value))
        for key, item in value.items():
            encode_into(out, key, depth + 1)
            encode_into(out, item, depth + 1)
    elif kind is dt.datetime or kind is dt.date or kind is dt.time:
        out.append(_TEMPORAL_TAGS[kind])
        _write_text(out, value.isoformat())
    elif kind is dt.timedelta:
        out.append(TIMEDELTA)
        for part in (value.days, value.seconds, value.microseconds):
            _write_int_body(out, part)
    elif kind is decimal.Decimal:
        out.append(DECIMAL)
        _write_text(out, str(value))
    elif kind is uuid.UUID:
        out.append(UUID)
        out += value.bytes
    else:
        _encode_registered(out, value, depth)


_COLLECTION_TAGS: dict[type, int] = {list: LIST, tuple: TUPLE, set: SET, frozenset: FROZENSET}
_TEMPORAL_TAGS: dict[type, int] = {dt.datetime: DATETIME, dt.date: DATE, dt.time: TIME}


def _encode_registered(out: bytearray, value: Any, depth: int) -> None:
    kind = type(value)
    tag = registry.tag_of(kind)
    if tag is None:
        raise EncodeError(
            f"cannot encode a value of type {kind.__module__}.{kind.__qualname__}; register it "
            "with relay_actors.codec.register(cls, tag=...) on every node, or return a "
            "supported type"
        )
    out.append(REGISTERED)
    _write_text(out, tag)
    payload = value.value if isinstance(value, enum.Enum) else registry.fields_of(value)
    encode_into(out, payload, depth + 1)


class Reader:
    """Cursor over decompressed tagged data; every read checks the remaining length."""

    __slots__ = ("data", "position")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def _take(self, length: int) -> bytes:
        end = self.position + length
        if end > len(self.data):
            raise DecodeError(
                f"truncated input: {length} bytes declared at offset {self.position}, "
                f"{len(self.data) - self.position} left"
            )
        chunk = self.data[self.position : end]
        self.position = end
        return chunk

    def _byte(self) -> int:
        if self.position >= len(self.data):
            raise DecodeError(f"truncated input at offset {self.position}")
        byte = self.data[self.position]
        self.position += 1
        return byte

    def _varint(self) -> int:
        number = 0
        for shift in range(0, 64, 7):
            byte = self._byte()
            number |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return number
        raise DecodeError(f"varint longer than 64 bits at offset {self.position}")

    def _count(self) -> int:
        # Every item takes at least one byte, so a count beyond the bytes
        # left is malformed; checking it first avoids a huge allocation.
        count = self._varint()
        if count > len(self.data) - self.position:
            raise DecodeError(
                f"count {count} exceeds the {len(self.data) - self.position} bytes left"
            )
        return count

    def _text(self) -> str:
        try:
            return self._take(self._count()).decode("utf-8", "surrogatepass")
        except UnicodeDecodeError as error:
            raise DecodeError(f"invalid UTF-8 in a string: {error}") from None

    def _int_body(self) -> int:
        return int.from_bytes(self._take(self._count()), "big", signed=True)

    def read_value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError(f"input is nested deeper than {MAX_DEPTH} levels")
        tag = self._byte()
        if tag == NONE:
            return None
        if tag == FALSE:
            return False
        if tag == TRUE:
            return True
        if tag == INT:
            return self._int_body()
        if tag == FLOAT:
            return _FLOAT_FORMAT.unpack(self._take(8))[0]
        if tag == STR:
            return self._text()
        if tag == BYTES:
            return self._take(self._count())
        if tag in (LIST, TUPLE, SET, FROZENSET):
            return self._collection(tag, depth)
        if tag == DICT:
            return self._dict(depth)
        if tag in (DATETIME, DATE, TIME, TIMEDELTA, DECIMAL, UUID):
            return self._scalar(tag)
        if tag == REGISTERED:
            return self._registered(depth)
        raise DecodeError(f"unknown tag 0x{tag:02x} at offset {self.position - 1}")

    def _collection(self, tag: int, depth: int) -> Any:
        items = [self.read_value(depth + 1) for _ in range(self._count())]
        if tag == LIST:
            return items
        if tag == TUPLE:
            return tuple(items)
        try:
            return set(items) if tag == SET else frozenset(items)
        except TypeError as error:
            raise DecodeError(f"unhashable set item: {error}") from None

    def _dict(self, depth: int) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for _ in range(self._count()):
            key = self.read_value(depth + 1)
            value = self.read_value(depth + 1)
            try:
                result[key] = value
            except TypeError:
                raise DecodeError(f"unhashable dict key of type {type(key).__name__}") from None
        return result

    def _scalar(self, tag: int) -> Any:
        try:
            if tag == DATETIME:
                return dt.datetime.fromisoformat(self._text())
            if tag == DATE:
                return dt.date.fromisoformat(self._text())
            if tag == TIME:
                return dt.time.fromisoformat(self._text())
            if tag == TIMEDELTA:
                days, seconds, micros = self._int_body(), self._int_body(), self._int_body()
                return dt.timedelta(days=days, seconds=seconds, microseconds=micros)
            if tag == DECIMAL:
                text = self._text()
                if len(text) > _MAX_DECIMAL_TEXT:
                    raise DecodeError(f"Decimal text longer than {_MAX_DECIMAL_TEXT} characters")
                return decimal.Decimal(text)
            return uuid.UUID(bytes=self._take(16))
        except (ValueError, OverflowError, decimal.InvalidOperation) as error:
            if isinstance(error, DecodeError):
                raise
            raise DecodeError(f"invalid value for tag 0x{tag:02x}: {error}") from None

    def _registered(self, depth: int) -> Any:
        tag = self._text()
        cls = registry.class_of(tag)
        payload = self.read_value(depth + 1)
        if cls is None:
            raise DecodeError(
                f"no class is registered for tag {tag!r:.80} in this process; register it with "
                "relay_actors.codec.register(cls, tag=...)"
            )
        try:
            if issubclass(cls, enum.Enum):
                return cls(payload)
            if not isinstance(payload, dict) or not all(isinstance(k, str) for k in payload):
                raise DecodeError(f"fields of tag {tag!r} must be a dict with str keys")
            return cls(**payload)
        except (TypeError, ValueError) as error:
            if isinstance(error, DecodeError):
                raise
            raise DecodeError(f"cannot build {cls.__qualname__} for tag {tag!r}: {error}") from None
