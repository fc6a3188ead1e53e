"""What the hostile-input tests share: a gateway client that scans every answer for
leaks, users with a token of the stack's own key, waiting for a task's outcome, a FIFO canary, crafted media, and a small
HTTP server on loopback that serves sources and redirects."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
from sqlalchemy.engine import Engine

from shared.config import Settings
from shared.tokens import SigningKey, issue_token
from tests.support.api import multipart
from tests.support.bombs import png_frames_mkv
from tests.support.client import PlatformClient
from tests.support.db import insert_user
from tests.support.media import ffmpeg

TIMEOUT = 30
FINAL_STATUSES = frozenset({"processed", "failed", "canceled"})

# --- leaks -------------------------------------------------------------------------------

# What must never reach a client: a traceback, a source or scratch path, SQL or the
# database driver's words, a process memory address (ffmpeg prints its contexts' ones).
LEAK_PATTERNS = {
    "a traceback": re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\", line \d+"),
    "a file path": re.compile(
        r"(?<![\w.:/])/(?:work|tmp|root|home|usr|var|etc|proc|srv|opt)/[\w.\-/]*"
        r"|\bsite-packages\b|\.py\b(?!\w)"
    ),
    "SQL": re.compile(
        r"\b(?:SELECT\s+[\w*,\s]+\s+FROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM)\b"
        r"|\bSQLSTATE\b|syntax error at or near|\bpg8000\b|\bpsycopg\b|\bsqlalchemy\b"
        r"|\brelation \"\w+\"|violates (?:foreign key|unique) constraint",
        re.IGNORECASE,
    ),
    "an exception name": re.compile(r"\b[A-Z]\w*(?:Error|Exception)(?:\(|: )"),
    "a memory address": re.compile(r"(?:@|\bat) 0x[0-9a-fA-F]{6,}"),
}


def leaks_in(body: str, *, echoed: Iterable[str] = (), foreign: Iterable[str] = ()) -> list[str]:
    """What ``body`` gives away: each leak pattern found, and each ``foreign`` value
    (another user's data). Text the client itself sent (``echoed``) is not counted."""
    for value in echoed:
        if value:
            body = body.replace(value, "")
    found = [
        f"{what}: {match.group(0)!r}"
        for what, pattern in LEAK_PATTERNS.items()
        if (match := pattern.search(body))
    ]
    found += [f"another user's data: {value!r}" for value in foreign if value and value in body]
    return found


@dataclass
class ScanLog:
    """How many answers were scanned in this run (the figure docs/security.md quotes)."""

    responses: int = 0
    bytes: int = 0


SCANNED = ScanLog()


def check_answer(
    response: requests.Response, *, echoed: Iterable[str] = (), foreign: Iterable[str] = ()
) -> None:
    """Fail unless ``response`` leaks nothing and an error is in the platform's shape."""
    body = response.content.decode("utf-8", "replace") if not _is_media(response) else ""
    SCANNED.responses += 1
    SCANNED.bytes += len(response.content)
    leaks = leaks_in(body, echoed=echoed, foreign=foreign)
    assert not leaks, (
        f"{response.request.method} {response.url} -> {response.status_code} leaks {leaks}: {body[:500]}"
    )
    if response.status_code >= 400:
        assert response.headers.get("Content-Type", "").startswith("application/json"), (
            f"{response.request.method} {response.url} -> {response.status_code} is not JSON: {body[:300]}"
        )
        payload = response.json()
        assert set(payload) == {"error"} and set(payload["error"]) == {"code", "message"}, payload
    assert response.status_code != 500, body[:500]


def _is_media(response: requests.Response) -> bool:
    kind = response.headers.get("Content-Type", "")
    return kind.startswith(("video/", "image/", "audio/")) or "attachment" in response.headers.get(
        "Content-Disposition", ""
    )


class Gateway:
    """HTTP through the nginx gateway; every answer is checked by :func:`check_answer`."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.session = requests.Session()

    def request(
        self,
        method: str,
        path: str,
        *,
        user: PlatformClient | None = None,
        foreign: Iterable[str] = (),
        echoed: Iterable[str] = (),
        **kwargs,
    ) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if user is not None:
            headers.setdefault("Authorization", f"Bearer {user.token}")
        kwargs.setdefault("timeout", TIMEOUT)
        url = path if path.startswith("http") else f"{self.base_url}{path}"
        response = self.session.request(method, url, headers=headers, **kwargs)
        check_answer(response, echoed=echoed, foreign=foreign)
        return response

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.request("DELETE", path, **kwargs)

    def close(self) -> None:
        self.session.close()


# --- users -------------------------------------------------------------------------------


def mint_user(engine: Engine, key: SigningKey, settings: Settings, base_url: str) -> PlatformClient:
    """A user row and a token signed with the stack's own key: cheap, for bulk tests
    (no password hashing); the api still verifies the token against auth's JWKS."""
    user_id = uuid.uuid4()
    insert_user(engine, user_id, username=f"bulk-{user_id.hex[:12]}")
    return PlatformClient(
        base_url, issue_token(key, settings, str(user_id)), f"{user_id.hex[:12]}@league.example", str(user_id)
    )


# --- tasks -------------------------------------------------------------------------------


def wait_for_outcome(gateway: Gateway, user: PlatformClient, task_id: str, *, timeout: float = 240) -> dict:
    """The task once it is processed, failed or canceled (polled through the gateway)."""
    deadline = time.monotonic() + timeout
    while True:
        task = gateway.get(f"/tasks/{task_id}", user=user).json()
        if task["status"] in FINAL_STATUSES:
            return task
        assert time.monotonic() < deadline, f"task {task_id} still {task['status']} after {timeout:.0f} s"
        time.sleep(0.5)


def upload(
    gateway: Gateway, user: PlatformClient, filename: str, content: bytes, **kwargs
) -> requests.Response:
    body, content_type = multipart(("file", filename, content))
    headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
    return gateway.post("/tasks", user=user, data=body, headers=headers, echoed=[filename], **kwargs)


# --- the canary --------------------------------------------------------------------------


# --- media -------------------------------------------------------------------------------


def tiny_video(
    path: Path,
    *,
    seconds: float = 1,
    size: str = "160x90",
    rate: int = 10,
    audio: bool = True,
    extra: tuple[str, ...] = (),
) -> Path:
    """A small H.264 (+ AAC) file made from ffmpeg's test sources."""
    args = ["-f", "lavfi", "-i", f"testsrc2=s={size}:r={rate}:d={seconds}"]
    if audio:
        args += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    args += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        args += ["-c:a", "aac", "-shortest"]
    ffmpeg(*args, *extra, str(path))
    return path


def huge_picture_mkv(path: Path, side: int = 16000) -> Path:
    """A Matroska file of two ``side`` x ``side`` PNG frames in a few tens of kilobytes:
    the picture is one bit deep and all black, so it compresses to almost nothing, yet
    decodes to side² pixels (a decompression bomb for a pipeline that would scale it)."""
    return png_frames_mkv(path, [side, side])


def ten_hour_video(path: Path) -> Path:
    """A real 10-hour H.264 file of a few kilobytes: 16x16 black, one frame a minute."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=16x16:r=1/60:d=36000",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        "600",
        str(path),
    )
    return path


# --- a source server on loopback ---------------------------------------------------------


@dataclass
class SourceServer:
    """Serves files by name and ``/redirect?to=<url>``; the local stack's workers may
    fetch from loopback (allow_loopback_sources), so it stands in for a public host."""

    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    base_url: str = ""

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"


def serve(server_state: SourceServer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            server_state.requests.append(self.path)
            parts = urlsplit(self.path)
            if parts.path == "/redirect":
                self.send_response(302)
                # Raw UTF-8 on the wire, as a hostile server may send it.
                location = parse_qs(parts.query)["to"][0]
                self.send_header("Location", location.encode().decode("latin-1"))
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            content = server_state.files.get(parts.path)
            if content is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server_state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    return httpd
