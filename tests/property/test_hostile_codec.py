"""Hostile input to the codec: every input ends in a value or DecodeError, fast and small.

Each generated input is decoded twice: once timed with `time.thread_time()`
(CPU time of this thread, which other processes competing for the CPU do not
inflate), and once under tracemalloc for its peak allocation. tracemalloc traces
Python allocations only, not zstandard's internal window buffers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import struct
import time
import tracemalloc
import uuid
from typing import Any

import pytest
import zstandard
from hypothesis import example, given
from hypothesis import strategies as st

from relay_actors import codec
from relay_actors.codec import binary, registry
from relay_actors.codec.binary import DecodeError
from tests.property.test_codec_properties import values

MAX_DECODE_SECONDS = 0.1
# NOTE: frames that hide their content size fail this bound today, because the
# decoder's output may run about 2 MiB past its own 16 MiB limit before it stops.
MAX_DECODE_GROWTH_BYTES = 16 * 1024 * 1024
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
RLE_BLOCK_BYTES = 128 * 1024
# Window descriptor for a 1 MiB window (window log 20 = 10 + exponent 10).
WINDOW_1_MIB = bytes([10 << 3])

SUPPORTED_TYPES = (
    type(None),
    bool,
    int,
    float,
    str,
    bytes,
    list,
    tuple,
    dict,
    set,
    frozenset,
    dt.datetime,
    dt.date,
    dt.time,
    dt.timedelta,
    decimal.Decimal,
    uuid.UUID,
)


def varint(number: int) -> bytes:
    out = bytearray()
    binary._write_varint(out, number)
    return bytes(out)


def text_body(text: str) -> bytes:
    encoded = text.encode("utf-8", "surrogatepass")
    return varint(len(encoded)) + encoded


def framed(raw: bytes, *, content_size: bool = True, version: int = codec.VERSION) -> bytes:
    compressor = zstandard.ZstdCompressor(write_content_size=content_size)
    return bytes([version]) + compressor.compress(raw)


class Labelled(bytes):
    """Bytes whose repr is a short label, so a failure report stays readable."""

    label = ""

    def __repr__(self) -> str:
        return self.label


def labelled(data: bytes, label: str) -> Labelled:
    result = Labelled(data)
    result.label = label
    return result


def rle_frame(
    blocks: int, byte: int, *, declared: int | None, last_size: int, checksum: bool
) -> Labelled:
    """Return a version byte and a hand-built zstandard frame of run-length blocks.

    Each of `blocks` blocks expands one byte to 128 KiB, then a last block of
    `last_size` bytes. With `declared` None the header hides the content size;
    otherwise it declares `declared` bytes, which may be a lie.
    """
    if declared is None:
        header = bytes([0x04 if checksum else 0x00]) + WINDOW_1_MIB
    else:
        # Single segment, 8-byte content size field.
        header = bytes([0xE0 | (0x04 if checksum else 0x00)]) + struct.pack("<Q", declared)
    body = bytearray()
    for _ in range(blocks):
        body += (0b010 | (RLE_BLOCK_BYTES << 3)).to_bytes(3, "little") + bytes([byte])
    body += (0b011 | (last_size << 3)).to_bytes(3, "little") + bytes([byte])
    if checksum:
        body += b"\x00\x00\x00\x00"
    frame = bytes([codec.VERSION]) + ZSTD_MAGIC + header + bytes(body)
    label = (
        f"rle_frame({blocks}, {byte}, declared={declared}, last_size={last_size}, "
        f"checksum={checksum})"
    )
    return labelled(frame, label)


@dataclasses.dataclass
class Canary:
    """A registered dataclass that counts how often it is built."""

    value: Any = None

    built = 0

    def __post_init__(self) -> None:
        type(self).built += 1


class Mood(enum.Enum):
    CALM = "calm"


CANARY_TAG = "tests.hostile.Canary"
MOOD_TAG = "tests.hostile.Mood"
codec.register(Canary, tag=CANARY_TAG)
codec.register(Mood, tag=MOOD_TAG)

tags = st.integers(min_value=0, max_value=255)
small_counts = st.integers(min_value=0, max_value=20)
huge_counts = st.integers(min_value=2**20, max_value=2**64 - 1)
collection_tags = st.sampled_from(
    [binary.LIST, binary.TUPLE, binary.DICT, binary.SET, binary.FROZENSET]
)
length_tags = st.sampled_from([binary.INT, binary.STR, binary.BYTES]) | collection_tags
text_tags = st.sampled_from(
    [binary.DATETIME, binary.DATE, binary.TIME, binary.DECIMAL, binary.REGISTERED]
)
hostile_class_names = st.sampled_from(
    ["os.system", "builtins.eval", "subprocess.Popen", "posix.system", "tests.values.Unregistered"]
)


def mutate(data: bytes, position: int, byte: int) -> bytes:
    if not data:
        return bytes([byte])
    position %= len(data)
    return data[:position] + bytes([byte]) + data[position + 1 :]


def raw_encoding(value: Any) -> bytes:
    out = bytearray()
    binary.encode_into(out, value, 0)
    return bytes(out)


hostile_inputs = st.one_of(
    # Random bytes, with and without a valid version byte and frame.
    st.binary(max_size=300),
    st.binary(max_size=300).map(lambda raw: bytes([codec.VERSION]) + raw),
    st.binary(max_size=300).map(framed),
    # Unknown version bytes in front of a valid frame.
    st.tuples(tags.filter(lambda v: v != codec.VERSION), values).map(
        lambda pair: bytes([pair[0]]) + codec.encode(pair[1])[1:]
    ),
    # Valid encodings cut short, and valid tagged data with one byte changed.
    values.map(codec.encode).flatmap(
        lambda data: st.integers(0, len(data) - 1).map(lambda cut: data[:cut])
    ),
    st.tuples(values.map(raw_encoding), st.integers(0, 2**16), tags).map(
        lambda t: framed(mutate(*t))
    ),
    # Unknown tags, and small tag bytes that read as short lengths.
    st.tuples(st.integers(binary.REGISTERED + 1, 255), st.binary(max_size=20)).map(
        lambda t: framed(bytes([t[0]]) + t[1])
    ),
    st.lists(st.integers(0, 20), max_size=80).map(bytes).map(framed),
    # Deep nesting of every container kind.
    st.tuples(collection_tags | st.just(binary.REGISTERED), st.integers(60, 5_000)).map(
        lambda t: framed(
            (bytes([binary.REGISTERED]) + text_body(CANARY_TAG)) * t[1]
            if t[0] == binary.REGISTERED
            else (bytes([t[0]]) + varint(1)) * t[1] + bytes([binary.NONE])
        )
    ),
    # Huge declared lengths and counts, and varints longer than 64 bits.
    st.tuples(length_tags, huge_counts, st.binary(max_size=20)).map(
        lambda t: framed(bytes([t[0]]) + varint(t[1]) + t[2])
    ),
    st.tuples(length_tags, st.integers(10, 40)).map(
        lambda t: framed(bytes([t[0]]) + b"\xff" * t[1] + b"\x01")
    ),
    # Scalars whose text or numbers are invalid or extreme.
    st.tuples(text_tags, st.text(max_size=60)).map(
        lambda t: framed(bytes([t[0]]) + text_body(t[1]) + bytes([binary.NONE]))
    ),
    st.tuples(st.integers(4_000, 5_000), st.sampled_from("9eE-.")).map(
        lambda t: framed(bytes([binary.DECIMAL]) + text_body("1" + t[1] * t[0]))
    ),
    st.lists(st.integers(-(2**80), 2**80), min_size=3, max_size=3).map(
        lambda parts: framed(
            bytes([binary.TIMEDELTA]) + b"".join(raw_encoding(part)[1:] for part in parts)
        )
    ),
    st.binary(max_size=20).map(lambda raw: framed(bytes([binary.UUID]) + raw)),
    st.binary(max_size=10).map(lambda raw: framed(bytes([binary.FLOAT]) + raw)),
    # Registered tags this process does not know, or classes named in the input.
    st.tuples(hostile_class_names | st.text(max_size=70), values).map(
        lambda t: framed(bytes([binary.REGISTERED]) + text_body(t[0]) + raw_encoding(t[1]))
    ),
    st.tuples(st.sampled_from([CANARY_TAG, MOOD_TAG]), values).map(
        lambda t: framed(bytes([binary.REGISTERED]) + text_body(t[0]) + raw_encoding(t[1]))
    ),
    # Frames that declare a huge size, lie about it, or hide it.
    st.builds(
        rle_frame,
        blocks=st.integers(0, 2_000),
        byte=tags,
        declared=st.none() | st.integers(0, 2**64 - 1),
        last_size=st.integers(0, RLE_BLOCK_BYTES),
        checksum=st.booleans(),
    ),
)


def assert_supported(value: Any, depth: int = 0) -> None:
    """Assert that a decoded value holds only codec types and registered classes."""
    assert depth <= codec.MAX_DEPTH + 2
    kind = type(value)
    assert kind in SUPPORTED_TYPES or registry.tag_of(kind) is not None, kind
    if isinstance(value, dict):
        for key, item in value.items():
            assert_supported(key, depth + 1)
            assert_supported(item, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            assert_supported(item, depth + 1)
    elif dataclasses.is_dataclass(value):
        for field in dataclasses.fields(value):
            assert_supported(getattr(value, field.name), depth + 1)


def decode_or_error(data: bytes) -> Any:
    try:
        return codec.decode(data)
    except DecodeError as error:
        return error


@example(rle_frame(2_000, 0, declared=None, last_size=0, checksum=False))
@example(rle_frame(1, binary.BYTES, declared=2**63, last_size=1, checksum=True))
@example(
    labelled(
        framed(b"\x00" * (32 * 1024 * 1024), content_size=False),
        "32 MiB of zero bytes in a frame without its content size",
    )
)
@given(hostile_inputs)
def test_hostile_input_decodes_safely(data: bytes) -> None:
    started = time.thread_time()
    outcome = decode_or_error(data)
    seconds = time.thread_time() - started

    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        decode_or_error(data)
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        tracemalloc.stop()

    assert seconds <= MAX_DECODE_SECONDS, f"decoding took {seconds * 1000:.0f} ms of CPU time"
    assert peak <= MAX_DECODE_GROWTH_BYTES, f"decoding allocated {peak / 2**20:.1f} MiB at peak"
    if not isinstance(outcome, DecodeError):
        assert_supported(outcome)


def test_unregistered_tag_never_instantiates() -> None:
    encoded = codec.encode(Canary([1, 2]))
    built = Canary.built
    codec.unregister(CANARY_TAG)
    try:
        with pytest.raises(DecodeError, match="no class is registered"):
            codec.decode(encoded)
        assert Canary.built == built
    finally:
        codec.register(Canary, tag=CANARY_TAG)
    assert codec.decode(encoded) == Canary([1, 2])


@given(st.sampled_from(["os.system", "builtins.eval", "tests.values.Unregistered"]), values)
def test_class_named_in_input_never_built(tag: str, value: Any) -> None:
    data = framed(bytes([binary.REGISTERED]) + text_body(tag) + raw_encoding(value))
    with pytest.raises(DecodeError, match="no class is registered"):
        codec.decode(data)
