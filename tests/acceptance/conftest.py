"""Fixtures of the acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from relay_actors.embedded import EmbeddedServer


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """A PostgreSQL server of this test alone, which the test may pause or crash."""
    server = EmbeddedServer()
    try:
        yield server
    finally:
        server.stop()
