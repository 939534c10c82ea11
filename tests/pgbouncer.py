"""A private PgBouncer process in transaction pooling mode, for the tests that need one.

The process listens on a loopback port that the OS picks, forwards one
database to the test server, and is stopped by the fixture that started it.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

BINARY = "pgbouncer"
READY_SECONDS = 15.0
STOP_SECONDS = 10.0
# Server connections per database and user. Few enough that the node's
# clients share them, so session state leaking from one client would show.
POOL_SIZE = 5
# PgBouncer refuses to run as root. Under root the tests switch to the owner
# of the server's socket directory, or to this user for a server on TCP.
UNPRIVILEGED_USER = "postgres"
# max_prepared_statements appeared in PgBouncer 1.21.
PREPARED_STATEMENTS_VERSION = (1, 21)


@dataclass(frozen=True)
class Bouncer:
    """A running PgBouncer: the DSN of the pooled database and of its admin console."""

    dsn: str
    admin_dsn: str
    version: tuple[int, int]


def binary_path() -> str | None:
    """Return the path of the pgbouncer binary, or None if it is not installed."""
    # Debian installs it in /usr/sbin, which a non-root PATH often lacks.
    return shutil.which(BINARY, path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin"]))


def _version(binary: str) -> tuple[int, int]:
    output = subprocess.run(
        [binary, "--version"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    match = re.search(r"PgBouncer (\d+)\.(\d+)", output)
    if match is None:
        raise RuntimeError(f"cannot read the version of {binary} from {output!r}")
    return int(match.group(1)), int(match.group(2))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _config(database_dsn: str, port: int, folder: Path, version: tuple[int, int]) -> str:
    target = conninfo_to_dict(database_dsn)
    database = str(target["dbname"])
    server = " ".join(
        f"{key}={target[key]}" for key in ("host", "port", "user") if target.get(key) is not None
    )
    lines = [
        "[databases]",
        f"{database} = {server} dbname={database}",
        "[pgbouncer]",
        "listen_addr = 127.0.0.1",
        f"listen_port = {port}",
        "unix_socket_dir =",
        "auth_type = trust",
        f"auth_file = {folder / 'users.txt'}",
        f"admin_users = {target.get('user', 'postgres')}",
        "pool_mode = transaction",
        f"default_pool_size = {POOL_SIZE}",
        "max_client_conn = 500",
        f"logfile = {folder / 'pgbouncer.log'}",
        f"pidfile = {folder / 'pgbouncer.pid'}",
    ]
    if version >= PREPARED_STATEMENTS_VERSION:
        lines.append("max_prepared_statements = 0")
    return "\n".join(lines) + "\n"


def run_bouncer(database_dsn: str) -> Iterator[Bouncer]:
    """Start PgBouncer in front of `database_dsn`, yield its DSNs, then stop it."""
    binary = binary_path()
    if binary is None:
        raise RuntimeError("the pgbouncer binary is not installed: apt-get install -y pgbouncer")
    version = _version(binary)

    folder = Path(tempfile.mkdtemp(prefix="relay_actors_pgbouncer_"))
    user = conninfo_to_dict(database_dsn).get("user", "postgres")
    (folder / "users.txt").write_text(f'"{user}" ""\n')
    port = _free_port()
    (folder / "pgbouncer.ini").write_text(_config(database_dsn, port, folder, version))

    command = [binary]
    if os.geteuid() == 0:
        account = _unprivileged_account(database_dsn)
        for path in [folder, *folder.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        command += ["-u", account.pw_name]
    command.append(str(folder / "pgbouncer.ini"))
    process = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )

    dsn = make_conninfo(database_dsn, host="127.0.0.1", port=port)
    admin_dsn = make_conninfo(dsn, dbname="pgbouncer")
    try:
        _wait_ready(admin_dsn, process, folder)
        yield Bouncer(dsn=dsn, admin_dsn=admin_dsn, version=version)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_SECONDS)
        if process.stderr is not None:
            process.stderr.close()
        shutil.rmtree(folder, ignore_errors=True)


def _unprivileged_account(database_dsn: str) -> pwd.struct_passwd:
    """Return the account PgBouncer runs as when the tests run as root.

    A server on a unix socket (the embedded one) keeps its socket in a
    directory that only the server's own account may enter.
    """
    host = conninfo_to_dict(database_dsn).get("host")
    if isinstance(host, str) and host.startswith("/"):
        return pwd.getpwuid(os.stat(host).st_uid)
    return pwd.getpwnam(UNPRIVILEGED_USER)


def _wait_ready(admin_dsn: str, process: subprocess.Popen[bytes], folder: Path) -> None:
    """Return once the admin console accepts a connection; raise if the process exits first."""
    log = folder / "pgbouncer.log"
    deadline = time.monotonic() + READY_SECONDS
    while True:
        try:
            with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=2) as conn:
                conn.execute("SHOW VERSION")
            return
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                raise
        try:
            process.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            continue
        text = log.read_text(errors="replace") if log.exists() else ""
        raise RuntimeError(
            f"pgbouncer exited with code {process.returncode} at start; log:\n{text}"
        )
