"""Safe binary encoding of job results, compressed with zstandard.

An encoded value is one version byte followed by a zstandard frame of the
tagged binary form below. Decoding never imports, evaluates or instantiates a
type named by the input: each tag maps to a fixed builtin type. Malformed,
truncated, oversized or too deeply nested input raises `DecodeError`.

Tagged form, version 1 (lengths and counts are unsigned LEB128 varints)::

    0x00 None   0x01 False   0x02 True
    0x03 int    varint byte length, then signed big-endian two's complement
    0x04 float  8 bytes, IEEE 754 big-endian
    0x05 str    varint byte length, then UTF-8
    0x06 bytes  varint length, then the bytes
    0x07 list   varint count, then the items
    0x08 tuple  varint count, then the items
    0x09 dict   varint count, then key and value for each entry
"""

from __future__ import annotations

import struct
import threading
from typing import Any

import zstandard

VERSION = 1
SUPPORTED_VERSIONS = frozenset({VERSION})
COMPRESSION_LEVEL = 3
MAX_DEPTH = 64
DEFAULT_MAX_DECODED_BYTES = 16 * 1024 * 1024

_NONE, _FALSE, _TRUE, _INT, _FLOAT, _STR, _BYTES, _LIST, _TUPLE, _DICT = range(10)
_FLOAT_FORMAT = struct.Struct(">d")

# A zstandard context shared between threads crashed the process (zstandard
# 0.25.0), so each thread keeps its own.
_contexts = threading.local()


class EncodeError(TypeError):
    """The value holds a type, or a nesting depth, that the codec does not encode."""


class DecodeError(ValueError):
    """The input is not a valid encoded value of a supported version."""


def encode(value: Any) -> bytes:
    """Return the compressed encoding of `value`, raising EncodeError for unsupported types."""
    raw = bytearray()
    _encode_into(raw, value, 0)
    return bytes([VERSION]) + _compressor().compress(bytes(raw))


def decode(data: bytes, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Any:
    """Return the value encoded in `data`.

    Raises:
        DecodeError: unknown version, malformed compression, a decompressed size
            over `max_decoded_bytes`, or malformed tagged data.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"encoded value must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError("encoded value is empty")
    if data[0] not in SUPPORTED_VERSIONS:
        raise DecodeError(
            f"unknown codec version {data[0]}; this release reads versions "
            f"{sorted(SUPPORTED_VERSIONS)}"
        )
    raw = _decompress(data[1:], max_decoded_bytes)
    reader = _Reader(raw)
    value = reader.read_value(0)
    if reader.position != len(raw):
        raise DecodeError(f"{len(raw) - reader.position} trailing bytes after the encoded value")
    return value


def _compressor() -> zstandard.ZstdCompressor:
    compressor = getattr(_contexts, "compressor", None)
    if compressor is None:
        compressor = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL, write_content_size=True)
        _contexts.compressor = compressor
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor = getattr(_contexts, "decompressor", None)
    if decompressor is None:
        decompressor = zstandard.ZstdDecompressor()
        _contexts.decompressor = decompressor
    return decompressor


def _decompress(frame: bytes, max_decoded_bytes: int) -> bytes:
    # The size declared in the frame header is checked first, because
    # zstandard ignores max_output_size when the header declares a size.
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as error:
        raise DecodeError(f"malformed zstandard frame: {error}") from None
    if declared > max_decoded_bytes:
        raise DecodeError(
            f"decompressed size {declared} bytes exceeds the limit of {max_decoded_bytes} bytes"
        )
    try:
        if declared >= 0:
            return _decompressor().decompress(frame)
        with _decompressor().stream_reader(frame) as reader:
            raw = reader.read(max_decoded_bytes + 1)
    except zstandard.ZstdError as error:
        raise DecodeError(f"malformed zstandard frame: {error}") from None
    if len(raw) > max_decoded_bytes:
        raise DecodeError(f"decompressed size exceeds the limit of {max_decoded_bytes} bytes")
    return raw


def _write_varint(out: bytearray, number: int) -> None:
    while True:
        low = number & 0x7F
        number >>= 7
        if number:
            out.append(low | 0x80)
        else:
            out.append(low)
            return


def _encode_into(out: bytearray, value: Any, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodeError(f"value is nested deeper than {MAX_DEPTH} levels")
    kind = type(value)
    if value is None:
        out.append(_NONE)
    elif kind is bool:
        out.append(_TRUE if value else _FALSE)
    elif kind is int:
        length = (value.bit_length() + 8) // 8
        out.append(_INT)
        _write_varint(out, length)
        out += value.to_bytes(length, "big", signed=True)
    elif kind is float:
        out.append(_FLOAT)
        out += _FLOAT_FORMAT.pack(value)
    elif kind is str:
        encoded = value.encode("utf-8", "surrogatepass")
        out.append(_STR)
        _write_varint(out, len(encoded))
        out += encoded
    elif kind is bytes or kind is bytearray:
        out.append(_BYTES)
        _write_varint(out, len(value))
        out += value
    elif kind is list or kind is tuple:
        out.append(_LIST if kind is list else _TUPLE)
        _write_varint(out, len(value))
        for item in value:
            _encode_into(out, item, depth + 1)
    elif kind is dict:
        out.append(_DICT)
        _write_varint(out, len(value))
        for key, item in value.items():
            _encode_into(out, key, depth + 1)
            _encode_into(out, item, depth + 1)
    else:
        raise EncodeError(
            f"cannot encode a value of type {kind.__module__}.{kind.__qualname__}; "
            "return None, bool, int, float, str, bytes, list, tuple or dict"
        )


class _Reader:
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
        # left is malformed; checking it now avoids a huge allocation.
        count = self._varint()
        if count > len(self.data) - self.position:
            raise DecodeError(
                f"count {count} exceeds the {len(self.data) - self.position} bytes left"
            )
        return count

    def read_value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise DecodeError(f"input is nested deeper than {MAX_DEPTH} levels")
        tag = self._byte()
        if tag == _NONE:
            return None
        if tag == _FALSE:
            return False
        if tag == _TRUE:
            return True
        if tag == _INT:
            return int.from_bytes(self._take(self._count()), "big", signed=True)
        if tag == _FLOAT:
            return _FLOAT_FORMAT.unpack(self._take(8))[0]
        if tag == _STR:
            try:
                return self._take(self._count()).decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as error:
                raise DecodeError(f"invalid UTF-8 in a string: {error}") from None
        if tag == _BYTES:
            return self._take(self._count())
        if tag == _LIST or tag == _TUPLE:
            items = [self.read_value(depth + 1) for _ in range(self._count())]
            return items if tag == _LIST else tuple(items)
        if tag == _DICT:
            result: dict[Any, Any] = {}
            for _ in range(self._count()):
                key = self.read_value(depth + 1)
                try:
                    result[key] = self.read_value(depth + 1)
                except TypeError:
                    raise DecodeError(f"unhashable dict key of type {type(key).__name__}") from None
            return result
        raise DecodeError(f"unknown tag 0x{tag:02x} at offset {self.position - 1}")
