"""A TCP proxy in front of the test server that can lose one reply, for fault tests.

`LosingProxy` listens on a loopback port that the OS picks and forwards every
connection to the server of a DSN, over TCP or its unix socket. Once armed with
a marker, it closes the first connection whose server-to-client bytes contain
that marker, without passing those bytes on. The server has by then finished the
statement, and for a statement outside a transaction also committed it: the
client loses only the reply. A client sees an error and cannot know whether
its statement committed.

The proxied DSN turns off SSL and GSS encryption, so that the proxy can read the
server's bytes.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
from collections.abc import Iterator

from psycopg.conninfo import conninfo_to_dict, make_conninfo

BUFFER_BYTES = 65536
# Server bytes kept from the previous read, so that a marker split across two
# reads is found. Markers must be shorter than this.
TAIL_BYTES = 256
SELECT_SECONDS = 0.1


class LosingProxy:
    """Forwards connections to a PostgreSQL server and can lose one reply."""

    def __init__(self, dsn: str) -> None:
        params = conninfo_to_dict(dsn)
        host = str(params.get("host") or "/var/run/postgresql")
        port = int(params.get("port") or 5432)
        self._upstream: tuple[int, str | tuple[str, int]] = (
            (socket.AF_UNIX, os.path.join(host, f".s.PGSQL.{port}"))
            if host.startswith("/")
            else (socket.AF_INET, (host, port))
        )
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._marker: bytes | None = None
        self._sockets: set[socket.socket] = set()
        self._stopping = threading.Event()
        self.lost = threading.Event()
        proxied = {**params, "sslmode": "disable", "gssencmode": "disable"}
        proxied.update(host="127.0.0.1", port=str(self._listener.getsockname()[1]))
        self.dsn = make_conninfo(**proxied)
        self._thread = threading.Thread(target=self._accept, name="losing-proxy", daemon=True)
        self._thread.start()

    def lose_reply_containing(self, marker: bytes) -> None:
        """Close the first connection whose server bytes contain `marker`, dropping them."""
        with self._lock:
            self._marker = marker

    def close(self) -> None:
        self._stopping.set()
        self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            family, address = self._upstream
            server = socket.socket(family, socket.SOCK_STREAM)
            try:
                server.connect(address)
            except OSError:
                client.close()
                server.close()
                continue
            with self._lock:
                self._sockets.update((client, server))
            threading.Thread(
                target=self._pump, args=(client, server), name="losing-proxy-pump", daemon=True
            ).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        tail = b""
        with selectors.DefaultSelector() as selector:
            selector.register(client, selectors.EVENT_READ, server)
            selector.register(server, selectors.EVENT_READ, client)
            try:
                while not self._stopping.is_set():
                    for key, _ in selector.select(SELECT_SECONDS):
                        source = key.fileobj
                        assert isinstance(source, socket.socket)
                        data = source.recv(BUFFER_BYTES)
                        if not data:
                            return
                        if source is server:
                            if self._should_lose(tail + data):
                                return
                            tail = (tail + data)[-TAIL_BYTES:]
                        key.data.sendall(data)
            except OSError:
                return
            finally:
                for sock in (client, server):
                    with contextlib.suppress(OSError):
                        sock.close()
                with self._lock:
                    self._sockets.difference_update((client, server))

    def _should_lose(self, data: bytes) -> bool:
        with self._lock:
            if self._marker is None or self._marker not in data:
                return False
            self._marker = None
        self.lost.set()
        return True


@contextlib.contextmanager
def losing_proxy(dsn: str) -> Iterator[LosingProxy]:
    proxy = LosingProxy(dsn)
    try:
        yield proxy
    finally:
        proxy.close()
