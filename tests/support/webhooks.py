"""A loopback webhook receiver for the tests: it verifies every delivery with the
``standardwebhooks`` library, records it, and answers as the test scripts it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True)
class Received:
    webhook_id: str
    headers: dict[str, str]
    body: bytes
    verified: bool  # with every secret the receiver holds
    at: float  # time.monotonic()


@dataclass(frozen=True)
class Answer:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: bytes = b""


Script = Callable[[int], Answer]
"""The answer to the n-th request (0-based)."""


class Receiver:
    """``with Receiver() as receiver``: listens on 127.0.0.1; ``receiver.url`` to register."""

    def __init__(self, script: Script = lambda n: Answer()) -> None:
        self.script = script
        self.secrets: list[str] = []
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                receiver._record(headers, body)
                with receiver._lock:
                    n = len(receiver.received) - 1
                answer = receiver.script(n)
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the dispatcher gave up waiting

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hook"

    def _record(self, headers: dict[str, str], body: bytes) -> None:
        verified = bool(self.secrets) and all(
            self._verifies(secret, headers, body) for secret in self.secrets
        )
        with self._lock:
            self.received.append(
                Received(headers.get("webhook-id", ""), headers, body, verified, time.monotonic())
            )

    @staticmethod
    def _verifies(secret: str, headers: dict[str, str], body: bytes) -> bool:
        try:
            Webhook(secret).verify(body, headers)
        except WebhookVerificationError:
            return False
        return True

    def wait_for(self, condition: Callable[[list[Received]], bool], timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if condition(list(self.received)):
                    return True
            time.sleep(0.05)
        return False

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
