"""The result codec: round trips of every supported type, and rejection of bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import math
import uuid
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest
import zstandard

from relay_actors import codec
from relay_actors.codec import DecodeError, EncodeError, decode, encode
from tests.assertions import assert_same
from tests.values import COLOR_TAG, POINT_TAG, Color, Point, Unregistered

# Tags of the version 1 tagged form, as documented in relay_actors.codec.binary.
(
    NONE, FALSE, TRUE, INT, FLOAT, STR, BYTES, LIST, TUPLE, DICT, SET, FROZENSET,
    DATETIME, DATE, TIME, TIMEDELTA, DECIMAL, UUID, REGISTERED,
) = range(19)  # fmt: skip
FIRST_UNKNOWN_TAG = 19


def varint(number: int) -> bytes:
    """Return `number` as an unsigned LEB128 varint, as the codec writes lengths."""
    out = bytearray()
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def text(value: str) -> bytes:
    """Return a str body: a varint byte length, then UTF-8 text, without a tag."""
    encoded = value.encode()
    return varint(len(encoded)) + encoded


def int_body(number: int) -> bytes:
    """Return an int body: a varint byte length, then signed big-endian bytes."""
    length = (number.bit_length() + 8) // 8
    return varint(length) + number.to_bytes(length, "big", signed=True)


def framed(raw: bytes, *, content_size: bool = True) -> bytes:
    """Return `raw` tagged data as an encoded value: version byte, then a zstandard frame."""
    compressor = zstandard.ZstdCompressor(write_content_size=content_size)
    return bytes([codec.VERSION]) + compressor.compress(raw)


ROUND_TRIPS = [
    pytest.param(None, id="none"),
    pytest.param(True, id="true"),
    pytest.param(False, id="false"),
    pytest.param(0, id="zero"),
    pytest.param(1, id="one"),
    pytest.param(-1, id="minus-one"),
    pytest.param(127, id="int-127"),
    pytest.param(128, id="int-128"),
    pytest.param(-128, id="int-minus-128"),
    pytest.param(-129, id="int-minus-129"),
    pytest.param(255, id="int-255"),
    pytest.param(2**63, id="int-2-63"),
    pytest.param(2**1000 + 7, id="huge-int"),
    pytest.param(-(2**1000) - 7, id="huge-negative-int"),
    pytest.param(0.0, id="float-zero"),
    pytest.param(-0.0, id="float-negative-zero"),
    pytest.param(3.25, id="float"),
    pytest.param(-1e308, id="float-large"),
    pytest.param(5e-324, id="float-subnormal"),
    pytest.param(math.inf, id="inf"),
    pytest.param(-math.inf, id="negative-inf"),
    pytest.param(math.nan, id="nan"),
    pytest.param("", id="empty-str"),
    pytest.param("plain ascii", id="ascii-str"),
    pytest.param("héllo wörld, 日本語, emoji 🎉", id="non-ascii-str"),
    pytest.param("nul \x00 inside", id="str-with-nul"),
    pytest.param("\ud800 lone surrogate", id="str-lone-surrogate"),
    pytest.param(b"", id="empty-bytes"),
    pytest.param(bytes(range(256)), id="bytes"),
    pytest.param([], id="empty-list"),
    pytest.param([1, "two", 3.0, None, b"4"], id="list"),
    pytest.param((), id="empty-tuple"),
    pytest.param((1, (2, (3,)), [4]), id="nested-tuple"),
    pytest.param({}, id="empty-dict"),
    pytest.param(
        {"a": {1: [True, None], (2, "b"): {"c": (b"d", -5)}}, 7: "seven", None: 0, False: 1.5},
        id="nested-dict-with-int-tuple-none-bool-keys",
    ),
    pytest.param([[[[[[[[[[]]]]]]]]]], id="deep-list"),
    pytest.param(set(), id="empty-set"),
    pytest.param({1, "two", (3, 4), None}, id="set"),
    pytest.param(frozenset({b"a", 2.5}), id="frozenset"),
    pytest.param({frozenset({1, 2}): "frozenset key"}, id="frozenset-key"),
    pytest.param(dt.datetime(2024, 2, 29, 23, 59, 58, 123456), id="naive-datetime"),
    pytest.param(dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC), id="utc-datetime"),
    pytest.param(
        dt.datetime(2024, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30))),
        id="offset-datetime",
    ),
    pytest.param(dt.datetime.min, id="min-datetime"),
    pytest.param(dt.datetime.max, id="max-datetime"),
    pytest.param(dt.date(1, 1, 1), id="date"),
    pytest.param(dt.time(23, 59, 59, 999999), id="time"),
    pytest.param(dt.time(8, 30, tzinfo=dt.UTC), id="aware-time"),
    pytest.param(dt.timedelta(days=-3, seconds=5, microseconds=7), id="negative-timedelta"),
    pytest.param(dt.timedelta.max, id="max-timedelta"),
    pytest.param(Decimal("1.10"), id="decimal-keeps-exponent"),
    pytest.param(Decimal("-0"), id="decimal-negative-zero"),
    pytest.param(Decimal("1E+999999"), id="decimal-huge-exponent"),
    pytest.param(Decimal("NaN"), id="decimal-nan"),
    pytest.param(Decimal("sNaN"), id="decimal-signaling-nan"),
    pytest.param(Decimal("-Infinity"), id="decimal-negative-infinity"),
    pytest.param(uuid.UUID("12345678-1234-5678-1234-567812345678"), id="uuid"),
    pytest.param(Point(1, -2, "registered"), id="registered-dataclass"),
    pytest.param(Color.GREEN, id="registered-enum"),
    pytest.param({Color.RED: [Point(0, 0)]}, id="registered-enum-key"),
]


@pytest.mark.parametrize("value", ROUND_TRIPS)
def test_round_trip(value: Any) -> None:
    assert_same(value, decode(encode(value)))


def test_zoneinfo_decodes_as_offset() -> None:
    value = dt.datetime(2024, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
    decoded = decode(encode(value))
    assert decoded == value
    assert decoded.tzinfo == dt.timezone(dt.timedelta(hours=2))


def test_bytearray_decodes_as_bytes() -> None:
    assert_same(b"abc", decode(encode(bytearray(b"abc"))))


def test_encoding_starts_with_version() -> None:
    assert encode(None)[0] == codec.VERSION


def test_repetitive_value_compresses() -> None:
    value = "x" * 100_000
    assert len(encode(value)) < 1_000


def test_max_depth_round_trips() -> None:
    value: Any = None
    for _ in range(codec.MAX_DEPTH):
        value = [value]
    assert_same(value, decode(encode(value)))


def test_decode_rejects_frame_without_size() -> None:
    raw = bytes([STR]) + varint(5) + b"hello"
    with pytest.raises(DecodeError, match="does not declare its content size"):
        decode(framed(raw, content_size=False))


def test_decode_accepts_memoryview() -> None:
    assert decode(memoryview(encode([1, 2]))) == [1, 2]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(object(), id="object"),
        pytest.param([1, object()], id="object-in-list"),
        pytest.param({"key": object()}, id="object-in-dict"),
        pytest.param(len, id="builtin-function"),
        pytest.param(Exception("boom"), id="exception"),
        pytest.param(Unregistered(1), id="unregistered-dataclass"),
        pytest.param(zoneinfo.ZoneInfo("UTC"), id="zoneinfo"),
        pytest.param(enum.Enum("Loose", "A").A, id="unregistered-enum"),
    ],
)
def test_encode_rejects_unsupported_type(value: Any) -> None:
    with pytest.raises(EncodeError):
        encode(value)


def test_encode_error_names_type() -> None:
    with pytest.raises(EncodeError, match=r"builtins\.object"):
        encode(object())


def test_encode_error_is_type_error() -> None:
    assert issubclass(EncodeError, TypeError)


def test_encode_rejects_too_deep_nesting() -> None:
    value: Any = None
    for _ in range(codec.MAX_DEPTH + 2):
        value = [value]
    with pytest.raises(EncodeError, match="deeper"):
        encode(value)


def _too_deep() -> bytes:
    return framed(bytes([LIST, 1]) * (codec.MAX_DEPTH + 2) + bytes([NONE]))


def _huge_declared_size() -> bytes:
    # 17 MiB of zeros compress to a few hundred bytes whose header declares the full size.
    raw = bytes([BYTES]) + varint(17 * 1024 * 1024) + bytes(17 * 1024 * 1024)
    return framed(raw)


def _huge_undeclared_size() -> bytes:
    raw = bytes([BYTES]) + varint(17 * 1024 * 1024) + bytes(17 * 1024 * 1024)
    return framed(raw, content_size=False)


def _huge_streamed() -> bytes:
    compressor = zstandard.ZstdCompressor().compressobj()
    chunks = [compressor.compress(bytes(1024 * 1024)) for _ in range(17)]
    return bytes([codec.VERSION]) + b"".join(chunks) + compressor.flush()


DECODE_ERRORS = [
    pytest.param(b"", id="empty"),
    pytest.param(bytes([0]) + encode(1)[1:], id="version-0"),
    pytest.param(bytes([2]) + encode(1)[1:], id="unknown-version"),
    pytest.param(bytes([255]), id="version-only"),
    pytest.param(bytes([codec.VERSION]), id="no-frame"),
    pytest.param(bytes([codec.VERSION]) + b"garbage that is not zstandard", id="garbage"),
    pytest.param(encode("a truncated value, long enough to matter")[:-4], id="truncated-frame"),
    pytest.param(encode(list(range(100)))[:8], id="truncated-header"),
    pytest.param(framed(b""), id="empty-tagged-data"),
    pytest.param(framed(bytes([STR]) + varint(10) + b"abc"), id="truncated-str"),
    pytest.param(framed(bytes([FLOAT]) + b"\x00\x00"), id="truncated-float"),
    pytest.param(framed(bytes([LIST]) + varint(3) + bytes([NONE])), id="truncated-list"),
    pytest.param(framed(bytes([LIST]) + varint(10**12)), id="count-past-end"),
    pytest.param(framed(bytes([STR]) + b"\xff" * 11), id="varint-too-long"),
    pytest.param(framed(bytes([FIRST_UNKNOWN_TAG])), id="first-unknown-tag"),
    pytest.param(framed(bytes([0xFF])), id="unknown-tag-ff"),
    pytest.param(framed(bytes([NONE, NONE])), id="trailing-tagged-bytes"),
    pytest.param(framed(bytes([STR]) + varint(1) + b"\xff"), id="invalid-utf8"),
    pytest.param(framed(bytes([DICT]) + varint(1) + bytes([LIST, 0, NONE])), id="unhashable-key"),
    pytest.param(
        framed(bytes([DICT]) + varint(1) + bytes([TUPLE, 1, LIST, 0, NONE])),
        id="unhashable-key-in-tuple",
    ),
    pytest.param(framed(bytes([SET, 1, LIST, 0])), id="unhashable-set-item"),
    pytest.param(framed(bytes([FROZENSET, 1, DICT, 0])), id="unhashable-frozenset-item"),
    pytest.param(framed(bytes([DICT, 1, SET, 0, NONE])), id="set-as-dict-key"),
    pytest.param(framed(bytes([DATETIME]) + text("yesterday")), id="invalid-datetime"),
    pytest.param(framed(bytes([DATETIME]) + text("2024-13-01T00:00:00")), id="month-13"),
    pytest.param(framed(bytes([DATE]) + text("2024-02-30")), id="invalid-date"),
    pytest.param(framed(bytes([TIME]) + text("25:00")), id="invalid-time"),
    pytest.param(framed(bytes([TIMEDELTA]) + int_body(10**12) * 3), id="timedelta-overflow"),
    pytest.param(framed(bytes([TIMEDELTA]) + int_body(1)), id="truncated-timedelta"),
    pytest.param(framed(bytes([DECIMAL]) + text("one point five")), id="invalid-decimal"),
    pytest.param(framed(bytes([DECIMAL]) + text("1" * 5_000)), id="decimal-text-too-long"),
    pytest.param(framed(bytes([UUID]) + bytes(15)), id="truncated-uuid"),
    pytest.param(
        framed(bytes([REGISTERED]) + text("tests.Missing") + bytes([NONE])),
        id="unknown-registered-tag",
    ),
    pytest.param(
        framed(bytes([REGISTERED]) + text(POINT_TAG) + bytes([NONE])), id="dataclass-fields-none"
    ),
    pytest.param(
        framed(
            bytes([REGISTERED])
            + text(POINT_TAG)
            + bytes([DICT, 1])
            + bytes([INT])
            + int_body(1)
            + bytes([NONE])
        ),
        id="dataclass-int-field-name",
    ),
    pytest.param(
        framed(
            bytes([REGISTERED])
            + text(POINT_TAG)
            + bytes([DICT, 1, STR])
            + text("z")
            + bytes([NONE])
        ),
        id="dataclass-unknown-field",
    ),
    pytest.param(
        framed(bytes([REGISTERED]) + text(COLOR_TAG) + bytes([STR]) + text("blue")),
        id="enum-unknown-value",
    ),
    pytest.param(framed(bytes([REGISTERED]) + bytes([STR])), id="truncated-registered-tag"),
    pytest.param(_too_deep(), id="too-deep-nesting"),
    pytest.param(_huge_declared_size(), id="declared-size-over-limit"),
    pytest.param(_huge_undeclared_size(), id="undeclared-size-over-limit"),
    pytest.param(_huge_streamed(), id="streamed-frame-over-limit"),
]


@pytest.mark.parametrize("data", DECODE_ERRORS)
def test_decode_rejects_invalid_input(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize("data", ["text", None, 1, [1]], ids=["str", "none", "int", "list"])
def test_decode_rejects_non_bytes(data: Any) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_decode_rejects_bytes_after_frame() -> None:
    with pytest.raises(DecodeError):
        decode(encode("value") + b"trailing garbage")


def test_decode_error_is_value_error() -> None:
    assert issubclass(DecodeError, ValueError)


def test_unknown_version_names_version() -> None:
    with pytest.raises(DecodeError, match="version 7"):
        decode(bytes([7]) + encode(1)[1:])


def test_decode_limit_is_configurable() -> None:
    data = encode(b"y" * 2_000)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode(data, max_decoded_bytes=1_000)


def test_decode_limit_applies_to_declared_size() -> None:
    data = framed(bytes([BYTES]) + varint(2_000) + b"y" * 2_000)
    with pytest.raises(DecodeError, match="exceeds the limit"):
        decode(data, max_decoded_bytes=1_000)


def test_value_at_decode_limit_decodes() -> None:
    raw = bytes([BYTES]) + varint(997) + b"z" * 997
    assert len(raw) == 1_000
    assert decode(framed(raw), max_decoded_bytes=1_000) == b"z" * 997


def test_registered_dataclass_keeps_type() -> None:
    assert type(decode(encode(Point(1, 2)))) is Point


def test_unregistered_error_says_register() -> None:
    with pytest.raises(EncodeError, match=r"relay_actors\.codec\.register"):
        encode(Unregistered(1))


def test_unregistered_tag_fails_decode() -> None:
    @dataclasses.dataclass
    class Temporary:
        value: int

    codec.register(Temporary, tag="tests.Temporary")
    try:
        data = encode(Temporary(5))
    finally:
        codec.unregister("tests.Temporary")
    with pytest.raises(DecodeError, match=r"tests\.Temporary"):
        decode(data)


def test_register_rejects_plain_class() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError):
        codec.register(Plain, tag="tests.Plain")


@pytest.mark.parametrize("tag", ["", "1starts-with-digit", "has space", "x" * 65])
def test_register_rejects_invalid_tag(tag: str) -> None:
    @dataclasses.dataclass
    class Tagged:
        value: int

    with pytest.raises(ValueError, match="invalid tag"):
        codec.register(Tagged, tag=tag)


def test_register_rejects_taken_tag() -> None:
    @dataclasses.dataclass
    class Impostor:
        x: int
        y: int

    with pytest.raises(ValueError, match="already registered"):
        codec.register(Impostor, tag=POINT_TAG)


def test_register_rejects_second_tag() -> None:
    with pytest.raises(ValueError, match="already registered"):
        codec.register(Point, tag="tests.OtherPoint")


def test_register_same_tag_again() -> None:
    assert codec.register(Point, tag=POINT_TAG) is Point
