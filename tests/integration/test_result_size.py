"""The result size limit, inline results and results read from the row."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay_actors import Error, Instance, Ok, Reason, Relay, codec
from relay_actors.wire import MAX_PAYLOAD_BYTES
from tests.workers import Blob, Echo, blob

RESULT_TIMEOUT = 10.0
SEED = 20_240_601

# Seeded random bytes do not compress, so the encoded size is the size plus a
# few bytes. Base64 in the notification adds a third: 1,000 bytes travel
# inline, 7,000 bytes do not fit a notification and are read from the row,
# and 20,000 bytes are also over the default limit of 8,192 bytes.
SIZES = [
    pytest.param(1_000, id="inline"),
    pytest.param(7_000, id="read-from-row"),
    pytest.param(20_000, id="over-default-limit"),
]
INLINE = [pytest.param(True, id="inline-on"), pytest.param(False, id="inline-off")]


def start_with_limit(
    start_instance: Callable[..., Instance], limit: int, inline_results: bool
) -> Instance:
    plugin = Relay.plugin(max_result_bytes=limit, inline_results=inline_results)
    return start_instance(plugins=[plugin])


def test_sizes_cover_both_paths() -> None:
    inline_capacity = MAX_PAYLOAD_BYTES * 3 // 4
    assert len(codec.encode(blob(1_000, seed=SEED))) < inline_capacity - 200
    assert len(codec.encode(blob(7_000, seed=SEED))) > inline_capacity


@pytest.mark.parametrize("inline_results", INLINE)
@pytest.mark.parametrize("size", SIZES)
def test_result_at_limit_arrives(
    start_instance: Callable[..., Instance], size: int, inline_results: bool
) -> None:
    value = blob(size, seed=SEED)
    instance = start_with_limit(start_instance, len(codec.encode(value)), inline_results)
    relay = Relay.async_(instance.name, Blob.new({"size": size, "seed": SEED}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(value)


@pytest.mark.parametrize("inline_results", INLINE)
@pytest.mark.parametrize("size", SIZES)
def test_result_over_limit_too_large(
    start_instance: Callable[..., Instance], size: int, inline_results: bool
) -> None:
    value = blob(size, seed=SEED)
    instance = start_with_limit(start_instance, len(codec.encode(value)) - 1, inline_results)
    relay = Relay.async_(instance.name, Blob.new({"size": size, "seed": SEED}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Error(Reason.RESULT_TOO_LARGE)


def test_default_limit_is_8192(start_instance: Callable[..., Instance]) -> None:
    instance = start_instance()
    size = 8_000
    while len(codec.encode(blob(size + 1, seed=SEED))) <= 8_192:
        size += 1
    relays = [
        Relay.async_(instance.name, Blob.new({"size": size, "seed": SEED})),
        Relay.async_(instance.name, Blob.new({"size": size + 1, "seed": SEED})),
    ]
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [
        Ok(blob(size, seed=SEED)),
        Error(Reason.RESULT_TOO_LARGE),
    ]


def test_limit_measures_compressed_size(start_instance: Callable[..., Instance]) -> None:
    instance = start_with_limit(start_instance, 1_000, inline_results=True)
    relay = Relay.async_(instance.name, Blob.new({"size": 1_000_000}))
    assert Relay.await_(relay, timeout=RESULT_TIMEOUT) == Ok(b"x" * 1_000_000)


def test_inline_off_still_delivers(start_instance: Callable[..., Instance]) -> None:
    instance = start_with_limit(start_instance, 8_192, inline_results=False)
    relays = [Relay.async_(instance.name, Echo.new({"value": i})) for i in range(10)]
    assert Relay.await_many(relays, timeout=RESULT_TIMEOUT) == [Ok(i) for i in range(10)]


@pytest.mark.parametrize("limit", [0, -1, True, 1.5], ids=["zero", "negative", "bool", "float"])
def test_invalid_limit_rejected(limit: object) -> None:
    with pytest.raises(ValueError, match="max_result_bytes"):
        Relay.plugin(max_result_bytes=limit)  # type: ignore[arg-type]
