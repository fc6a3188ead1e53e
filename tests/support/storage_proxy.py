"""A TCP proxy in front of the Cloud Storage emulator that a drill can switch to answer
``503 Service Unavailable`` to every request, as Cloud Storage does in a bad minute.

The services reach storage through it (``STORAGE_EMULATOR_HOST`` = the proxy's URL);
the tests themselves read the emulator directly. While the proxy passes traffic it
copies bytes both ways without looking at them; when an outage starts it cuts every
open connection (a keep-alive connection opened before the outage must not slip
through it) and answers each new request with a 503 in the JSON shape of the JSON API.
"""

from __future__ import annotations

import json
import selectors
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import urlsplit

_HEAD_LIMIT = 64 * 1024
_BODY_LIMIT = 256 * 1024 * 1024
_IO_TIMEOUT = 10.0
_ERROR_BODY = json.dumps(
    {
        "error": {
            "code": 503,
            "message": "storage fault drill: service unavailable",
            "errors": [{"reason": "backendError"}],
        }
    }
).encode()


class StorageFaultProxy:
    """Forwards ``127.0.0.1:<port>`` to ``upstream`` (``http://host:port``); use as a
    context manager, and :meth:`outage` to make it answer 503."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream if "://" in upstream else f"http://{upstream}")
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"the upstream needs a host and a port: {upstream!r}")
        self._upstream = (parts.hostname, parts.port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._failing = threading.Event()
        self._lock = threading.Lock()
        self._piped: set[socket.socket] = set()
        self._refused: list[str] = []
        self._thread = threading.Thread(target=self._accept_loop, name="storage-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def refused(self) -> list[str]:
        """Request lines answered 503 so far (``POST /upload/storage/v1/b/... HTTP/1.1``)."""
        with self._lock:
            return list(self._refused)

    def __enter__(self) -> StorageFaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._listener.close()
        self._cut_piped()
        self._thread.join(timeout=5)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Every request answered 503 while the block runs."""
        self._failing.set()
        self._cut_piped()
        try:
            yield
        finally:
            self._failing.clear()

    # --- connections ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # the listener was closed
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client:
            if self._failing.is_set():
                self._refuse(client)
                return
            try:
                upstream = socket.create_connection(self._upstream, timeout=_IO_TIMEOUT)
            except OSError:
                return  # the client sees the connection close: a transport error
            with upstream:
                with self._lock:
                    self._piped.update((client, upstream))
                try:
                    self._pipe(client, upstream)
                finally:
                    with self._lock:
                        self._piped.difference_update((client, upstream))

    def _cut_piped(self) -> None:
        # shutdown(), not close(): it wakes the pipe's selector, which then closes both.
        with self._lock:
            for sock in self._piped:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    @staticmethod
    def _pipe(client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        open_reads = {client, upstream}
        with selectors.DefaultSelector() as selector:
            for sock in open_reads:
                sock.setblocking(True)
                selector.register(sock, selectors.EVENT_READ)
            while open_reads:
                for key, _ in selector.select(timeout=1.0):
                    source = key.fileobj
                    try:
                        data = source.recv(65536)
                        if data:
                            peer[source].sendall(data)
                            continue
                        peer[source].shutdown(socket.SHUT_WR)
                    except OSError:
                        return
                    selector.unregister(source)
                    open_reads.discard(source)

    def _refuse(self, client: socket.socket) -> None:
        client.settimeout(_IO_TIMEOUT)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(65536)
                if not chunk:
                    return
                head += chunk
                if len(head) > _HEAD_LIMIT:
                    return
            head, _, body = head.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:])
            )
            # Read the body the client sends, so it gets the answer rather than a reset.
            remaining = min(int(headers.get("content-length", "0") or 0), _BODY_LIMIT) - len(body)
            while remaining > 0:
                chunk = client.recv(min(remaining, 65536))
                if not chunk:
                    break
                remaining -= len(chunk)
            with self._lock:
                self._refused.append(lines[0])
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\n"
                b"Content-Type: application/json; charset=UTF-8\r\n"
                + f"Content-Length: {len(_ERROR_BODY)}\r\n".encode()
                + b"Connection: close\r\n\r\n"
                + _ERROR_BODY
            )
        except (OSError, ValueError):
            return
