"""Safe binary encoding of job results, compressed with zstandard.

An encoded value is one version byte followed by a zstandard frame of the
tagged binary form described in `relay_actors.codec.binary`. Decoding never
imports, evaluates or instantiates a type named by the input: each tag maps
to a fixed builtin type, or to a class this process registered with
`register(cls, tag=...)`. Malformed, truncated, oversized or too deeply nested
input raises `DecodeError`.

A timezone-aware `datetime` keeps its UTC offset but not its zone name, so a
`ZoneInfo` value decodes with a fixed-offset `timezone`.
"""

from __future__ import annotations

import threading
from typing import Any

import zstandard

from relay_actors.codec.binary import MAX_DEPTH, DecodeError, EncodeError, Reader, encode_into
from relay_actors.codec.registry import register, unregister

__all__ = [
    "DEFAULT_MAX_DECODED_BYTES",
    "MAX_DEPTH",
    "VERSION",
    "DecodeError",
    "EncodeError",
    "decode",
    "encode",
    "register",
    "unregister",
]

VERSION = 1
SUPPORTED_VERSIONS = frozenset({VERSION})
COMPRESSION_LEVEL = 3
DEFAULT_MAX_DECODED_BYTES = 16 * 1024 * 1024

# A zstandard context shared between threads crashed the process (zstandard
# 0.25.0), so each thread keeps its own.
_contexts = threading.local()


def encode(value: Any) -> bytes:
    """Return the compressed encoding of `value`, raising EncodeError for unsupported types."""
    raw = bytearray()
    encode_into(raw, value, 0)
    return bytes([VERSION]) + _compressor().compress(bytes(raw))


def decode(data: bytes, *, max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES) -> Any:
    """Return the value encoded in `data`.

    Raises:
        DecodeError: unknown version, malformed compression, a decompressed size
            over `max_decoded_bytes`, malformed tagged data, or a registered tag
            this process does not know.
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
    reader = Reader(raw)
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
    # Every frame this codec writes declares its content size, so a frame that
    # hides it is rejected. The size of such a frame could only be bounded
    # while it is decompressed, after memory was already spent.
    try:
        declared = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as error:
        raise DecodeError(f"malformed zstandard frame: {error}") from None
    if declared < 0:
        raise DecodeError("the zstandard frame does not declare its content size")
    if declared > max_decoded_bytes:
        raise DecodeError(
            f"decompressed size {declared} bytes exceeds the limit of {max_decoded_bytes} bytes"
        )
    # zstandard sizes its output buffer from the declared size and rejects a
    # frame whose content exceeds it, so memory stays within the bound.
    decompressor = _decompressor().decompressobj()
    try:
        output = decompressor.decompress(frame)
    except zstandard.ZstdError as error:
        raise DecodeError(f"malformed zstandard frame: {error}") from None
    if not decompressor.eof:
        raise DecodeError("truncated zstandard frame")
    if decompressor.unused_data:
        raise DecodeError("trailing bytes after the zstandard frame")
    return output
