"""Fixtures of the acceptance tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import psycopg
import pytest

from relay_actors.embedded import EmbeddedServer
from tests.conftest import REPO_ROOT


@pytest.fixture
def own_server() -> Iterator[EmbeddedServer]:
    """A PostgreSQL server of this test alone, which the test may pause or crash."""
    server = EmbeddedServer()
    try:
        yield server
    finally:
        server.stop()


def run_module(module: str, *arguments: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run `python -m module arguments` from the repository root and return what it printed."""
    return subprocess.run(
        [sys.executable, "-m", module, *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        check=False,
    )


def bench_schemas(dsn: str) -> set[str]:
    """Return the names of the schemas that benchmark runs create (`bench_<hex>`)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'bench%'")
        return {row[0] for row in rows}
