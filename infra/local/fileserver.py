"""Loopback HTTP servers for tests and benchmarks: a folder (where the local stack's
workers fetch sources from; the stack runs with ``allow_loopback_sources``), or a WSGI
application (a stand-in JWKS, an auth service across its restarts)."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from werkzeug.serving import make_server


@dataclass(frozen=True)
class ServedFolder:
    folder: Path
    base_url: str

    def url(self, path: Path) -> str:
        """The URL of ``path``, a file inside the served folder."""
        return f"{self.base_url}/{path.relative_to(self.folder)}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def serve_folder(folder: Path) -> Iterator[ServedFolder]:
    """Serve ``folder`` on 127.0.0.1 on a free port until the block ends."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="loopback-files", daemon=True)
    thread.start()
    try:
        yield ServedFolder(folder, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serve_wsgi(app, name: str = "loopback-wsgi") -> Iterator[str]:
    """Serve the WSGI callable ``app`` on 127.0.0.1 on a free port until the block ends;
    yields the server's base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name=name, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
