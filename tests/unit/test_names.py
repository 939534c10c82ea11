"""Schema prefixes, node ids and the LISTEN channel names derived from them."""

from __future__ import annotations

import re
from typing import Any

import pytest

from relay_actors import ConfigurationError
from relay_actors.names import insert_channel, make_node_id, relay_channel, validate_prefix

# PostgreSQL truncates identifiers, channel names included, to 63 bytes.
MAX_IDENTIFIER_BYTES = 63
LONGEST_PREFIX = "p" * 48


@pytest.mark.parametrize("prefix", ["public", "t_0a1b", "_private", "a", LONGEST_PREFIX])
def test_valid_prefix_accepted(prefix: str) -> None:
    assert validate_prefix(prefix) == prefix


INVALID_PREFIXES = [
    pytest.param("", id="empty"),
    pytest.param("Public", id="uppercase"),
    pytest.param("1jobs", id="leading-digit"),
    pytest.param("my-jobs", id="hyphen"),
    pytest.param("my jobs", id="space"),
    pytest.param('jobs"; DROP TABLE x; --', id="quote"),
    pytest.param("p" * 49, id="too-long"),
    pytest.param("pg_jobs", id="reserved-pg"),
    pytest.param("jobs\n", id="trailing-newline"),
    pytest.param(None, id="none"),
    pytest.param(b"jobs", id="bytes"),
]


@pytest.mark.parametrize("prefix", INVALID_PREFIXES)
def test_invalid_prefix_rejected(prefix: Any) -> None:
    with pytest.raises(ConfigurationError, match="invalid prefix"):
        validate_prefix(prefix)


def test_node_id_keeps_name() -> None:
    assert re.fullmatch(r"web-1-[0-9a-f]{8}", make_node_id("web-1"))


def test_node_ids_differ_per_call() -> None:
    assert make_node_id("web-1") != make_node_id("web-1")


def test_node_id_replaces_unsafe_characters() -> None:
    assert make_node_id("web 1/ü").startswith("web-1--")


def test_node_id_truncates_long_name() -> None:
    assert len(make_node_id("n" * 500)) == 48 + 9


@pytest.mark.parametrize("name", ["", "   ", None], ids=["empty", "blank", "none"])
def test_invalid_node_name_rejected(name: Any) -> None:
    with pytest.raises(ConfigurationError, match="invalid node name"):
        make_node_id(name)


def test_relay_channel_fits_identifier() -> None:
    channel = relay_channel(LONGEST_PREFIX, make_node_id("n" * 500))
    assert len(channel.encode()) <= MAX_IDENTIFIER_BYTES


def test_insert_channel_fits_identifier() -> None:
    assert len(insert_channel(LONGEST_PREFIX).encode()) <= MAX_IDENTIFIER_BYTES


def test_relay_channel_differs_per_node() -> None:
    node_a, node_b = make_node_id("web"), make_node_id("web")
    assert relay_channel("public", node_a) != relay_channel("public", node_b)


def test_relay_channel_differs_per_prefix() -> None:
    node = make_node_id("web")
    assert relay_channel("one", node) != relay_channel("two", node)


def test_relay_channel_is_stable() -> None:
    node = make_node_id("web")
    assert relay_channel("public", node) == relay_channel("public", node)


def test_insert_channel_differs_per_prefix() -> None:
    assert insert_channel("one") != insert_channel("two")


def test_channels_are_plain_identifiers() -> None:
    for channel in (insert_channel("public"), relay_channel("public", make_node_id("web"))):
        assert re.fullmatch(r"[a-z_][a-z0-9_]*", channel), channel


def test_insert_and_relay_channels_differ() -> None:
    assert insert_channel("public") != relay_channel("public", "")
