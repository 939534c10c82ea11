"""The embedded server's watchdog: which process it stops, and what it deletes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from relay_actors.embedded_watchdog import is_running, postmaster_pid, stop_server
from tests.conftest import wait_until

pytestmark = pytest.mark.skipif(
    not Path("/proc/self").exists(), reason="the watchdog checks command lines in /proc"
)

SLEEPER = "import time; time.sleep(600)"


def make_data_directory(root: Path, pid: int) -> Path:
    data = root / "data"
    data.mkdir()
    (data / "postmaster.pid").write_text(f"{pid}\n{data}\n")
    return data


def test_pid_of_another_program_is_ignored(tmp_path: Path) -> None:
    data = make_data_directory(tmp_path, os.getpid())

    assert postmaster_pid(data) is None


def test_missing_or_garbled_pid_file_is_ignored(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    assert postmaster_pid(data) is None

    (data / "postmaster.pid").write_text("not a pid\n")
    assert postmaster_pid(data) is None


def test_stop_server_spares_other_programs(tmp_path: Path) -> None:
    make_data_directory(tmp_path, os.getpid())

    stop_server(tmp_path)

    assert not tmp_path.exists()
    assert is_running(os.getpid())


def test_stop_server_stops_the_process_on_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # A stand-in for a postmaster: its command line names the data directory.
    server = subprocess.Popen([sys.executable, "-c", SLEEPER, str(data)])
    try:
        make_data_directory(tmp_path, server.pid)
        # Right after Popen returns, the child's /proc command line can read
        # as empty for a moment: seen in 1 of 20 starts on this machine.
        wait_until(
            lambda: postmaster_pid(data) == server.pid,
            timeout=5.0,
            message="the stand-in's command line never named its data directory",
        )

        stop_server(tmp_path)

        assert not is_running(server.pid)
        assert not tmp_path.exists()
    finally:
        server.kill()
        server.wait()


def test_zombie_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    # Not reaped yet, so the exited child stays a zombie until wait().
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)

    assert not is_running(child.pid)

    child.wait()
