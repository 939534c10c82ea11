"""Child processes of the benchmark: start one, wait for its ready line, stop it.

Each child started here gets a pipe as stdin and stops itself when the pipe
closes, so it also stops when the benchmark process dies, even by SIGKILL.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

logger = logging.getLogger("benchmarks.processes")

READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0
# The repository root, so that children can import the benchmarks package.
ROOT = Path(__file__).resolve().parent.parent


class ChildFailed(RuntimeError):
    """A child process exited, or did not report ready, in time."""


class Child:
    """A running child process that printed a line starting with `ready`."""

    def __init__(self, name: str, process: subprocess.Popen[str], ready_line: str) -> None:
        self.name = name
        self.process = process
        self.ready_line = ready_line

    def ready_field(self, key: str) -> str | None:
        """Return the value of `key=value` in the ready line, or None."""
        for word in self.ready_line.split():
            name, _, value = word.partition("=")
            if name == key:
                return value
        return None

    def check_alive(self) -> None:
        """Raise ChildFailed if the process has exited."""
        if self.process.poll() is not None:
            raise ChildFailed(
                f"{self.name} exited with status {self.process.returncode} during the workload"
            )

    def stop(self) -> None:
        """Send SIGTERM, wait for the exit, and SIGKILL after STOP_TIMEOUT_SECONDS."""
        process = self.process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop after SIGTERM; killing it", self.name)
                process.kill()
                process.wait()
        if process.stdin is not None:
            process.stdin.close()
        if process.returncode not in (0, -signal.SIGTERM):
            logger.warning("%s exited with status %s", self.name, process.returncode)


def start_child(name: str, arguments: Sequence[str]) -> Child:
    """Run `python -m ARGUMENTS`, wait for its `ready` line on stdout and return it.

    Raises:
        ChildFailed: the process exited or printed no ready line within READY_TIMEOUT_SECONDS.
    """
    command = [sys.executable, "-m", *arguments]
    process = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, cwd=ROOT
    )
    lines: list[str] = []
    ready = threading.Event()

    def read_stdout() -> None:
        assert process.stdout is not None
        # Reads to the end, so that a chatty child does not block on a full
        # pipe, then closes the pipe.
        with process.stdout:
            for line in process.stdout:
                if not ready.is_set() and line.startswith("ready"):
                    lines.append(line.strip())
                    ready.set()

    threading.Thread(target=read_stdout, name=f"{name}-stdout", daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    child = Child(name, process, "")
    try:
        while not ready.wait(0.05):
            if process.poll() is not None:
                raise ChildFailed(
                    f"{name} exited with status {process.returncode} before it was ready"
                )
            if time.monotonic() > deadline:
                raise ChildFailed(f"{name} was not ready after {READY_TIMEOUT_SECONDS:.0f} s")
    except BaseException:
        child.stop()
        raise
    child.ready_line = lines[0]
    return child


def join_threads(threads: Sequence[threading.Thread], child: Child | None) -> None:
    """Wait for the threads to end; raise ChildFailed as soon as `child` exits.

    Without this a dead worker process would show only when every caller's
    await timed out, minutes later.
    """
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
            if child is not None:
                child.check_alive()


def stop_when_parent_exits() -> None:
    """Send this process SIGTERM once stdin reaches end of file (the parent closed it or died)."""

    def watch() -> None:
        # os.read on the descriptor, not sys.stdin: a daemon thread blocked in
        # a buffered read stops the interpreter from shutting down cleanly.
        while os.read(0, 4096):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
