"""Relay plugin options and the relay meta that carries them."""

from __future__ import annotations

import pytest

from relay_actors.plugin import DEFAULT_MAX_RESULT_BYTES, RelayPlugin


def test_default_options_add_no_meta() -> None:
    assert RelayPlugin().meta_options() == {}


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        (RelayPlugin(max_result_bytes=100), {"max_bytes": 100}),
        (RelayPlugin(inline_results=False), {"inline": False}),
        (RelayPlugin(tracebacks=False), {"tracebacks": False}),
        (
            RelayPlugin(max_result_bytes=DEFAULT_MAX_RESULT_BYTES + 1, tracebacks=False),
            {"max_bytes": DEFAULT_MAX_RESULT_BYTES + 1, "tracebacks": False},
        ),
    ],
    ids=["max-bytes", "inline", "tracebacks", "two"],
)
def test_changed_options_enter_meta(plugin: RelayPlugin, expected: dict[str, object]) -> None:
    assert plugin.meta_options() == expected
