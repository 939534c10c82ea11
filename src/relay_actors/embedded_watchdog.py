"""Stop an embedded PostgreSQL server whose owning process ended without stopping it.

`EmbeddedServer` runs this file as a script, with the server's directory as
its argument and its standard input a pipe from the owner. The owner writes
`stopped` to the pipe after it stopped the server and deleted the directory.
If the pipe reaches end of file without that word, the owner ended some other
way, perhaps by SIGKILL. The watchdog then stops the postmaster named in
DIRECTORY/data/postmaster.pid, escalating from a fast shutdown to SIGKILL,
and deletes DIRECTORY.

It runs by path, not with `python -m`, so that it imports nothing of
relay_actors and its dependencies.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

STOPPED = b"stopped"
# Seconds to wait for the postmaster to exit after each signal.
FAST_SHUTDOWN_SECONDS = 10.0
IMMEDIATE_SHUTDOWN_SECONDS = 5.0
KILL_SECONDS = 5.0
EXIT_POLL_SECONDS = 0.05


def postmaster_pid(data: Path) -> int | None:
    """Return the pid in `data`'s postmaster.pid, or None if no server runs there."""
    try:
        first_line = (data / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first_line)
    except (OSError, ValueError):
        return None
    return pid if _is_postmaster_of(pid, data) else None


def _is_postmaster_of(pid: int, data: Path) -> bool:
    """Return False if `pid` is known not to be a server on `data`.

    A postmaster that crashed leaves its pid file behind, and the pid may now
    belong to another process. On Linux the command line shows the data
    directory. Elsewhere the pid file is trusted.
    """
    if not Path("/proc/self").exists():
        return is_running(pid)
    try:
        command_line = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(data).encode() in command_line


def is_running(pid: int) -> bool:
    """Return True if process `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    # The state letter follows the command name, which is in parentheses.
    return status.rpartition(")")[2].split()[0] != "Z"


def wait_for_exit(pid: int, seconds: float) -> bool:
    """Return True once `pid` has exited, or False if it still runs after `seconds`."""
    deadline = time.monotonic() + seconds
    while is_running(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(EXIT_POLL_SECONDS)
    return True


def stop_server(directory: Path) -> None:
    """Stop the server on `directory`/data, if one runs, then delete `directory`."""
    pid = postmaster_pid(directory / "data")
    if pid is not None:
        steps = (
            (signal.SIGINT, FAST_SHUTDOWN_SECONDS),
            (signal.SIGQUIT, IMMEDIATE_SHUTDOWN_SECONDS),
            (signal.SIGKILL, KILL_SECONDS),
        )
        for signal_number, seconds in steps:
            try:
                os.kill(pid, signal_number)
            except ProcessLookupError:
                break
            if wait_for_exit(pid, seconds):
                break
        else:
            print(
                f"relay_actors embedded watchdog: PostgreSQL server {pid} did not exit "
                "after SIGKILL",
                file=sys.stderr,
            )
    shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if len(arguments) != 1:
        print("usage: embedded_watchdog.py DIRECTORY", file=sys.stderr)
        return 2
    # The owner stops the server on Ctrl-C itself, so the watchdog ignores
    # SIGINT and keeps watching until the owner has ended.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    received = sys.stdin.buffer.read()
    if received.strip() == STOPPED:
        return 0
    stop_server(Path(arguments[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
