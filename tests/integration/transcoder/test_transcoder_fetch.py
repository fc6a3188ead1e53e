"""Fetching URL sources: the SSRF targets of the issue, limits and error kinds, against
a real HTTP server on loopback (allowed only where a test says so)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from services.transcoder import fetch as fetch_module
from services.transcoder.errors import PermanentFailure, TransientFailure
from services.transcoder.fetch import FetchPolicy, UrlFetcher, system_resolver

pytestmark = pytest.mark.security

BODY = bytes(range(256)) * 4096  # 1 MiB


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        if self.path == "/video.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/undeclared":  # no Content-Length: the limit applies while streaming
            self.send_response(200)
            self.end_headers()
            for _ in range(4):
                self.wfile.write(BODY)
        elif self.path == "/to-private":
            self._redirect("http://10.0.0.1/video.mp4")
        elif self.path == "/to-metadata":
            self._redirect("http://169.254.169.254/computeMetadata/v1/")
        elif self.path == "/to-internal-name":
            self._redirect("http://intranet.videos.example/video.mp4")
        elif self.path == "/to-file":
            self._redirect("file:///etc/passwd")
        elif self.path == "/relative":
            self._redirect("/video.mp4")
        elif self.path.startswith("/loop"):
            self._redirect(f"/loop{len(self.server.paths)}")
        elif self.path == "/busy":
            self.send_error(503)
        elif self.path == "/stall":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[:1000])
            self.wfile.flush()
            time.sleep(3)
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.paths = []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def base(server):
    server.paths.clear()
    return f"http://127.0.0.1:{server.server_address[1]}"


# Test DNS: public-looking names that resolve where a hostile resolver would point them.
NAMES = {
    "videos.example": ["127.0.0.1"],
    "intranet.videos.example": ["10.0.0.1"],
    "mixed.videos.example": ["127.0.0.1", "10.0.0.1"],
    "metadata.videos.example": ["169.254.169.254"],
}


def resolver(host: str, port: int) -> list[str]:
    if host in NAMES:
        return NAMES[host]
    return system_resolver(host, port)


def fetcher(allow_loopback: bool = False, **changes) -> UrlFetcher:
    policy = dict(
        allow_loopback=allow_loopback,
        max_bytes=2 * len(BODY),
        connect_timeout=2,
        read_timeout=1,
        total_timeout=30,
        max_redirects=3,
    )
    return UrlFetcher(FetchPolicy(**(policy | changes)), resolver=resolver)


def test_a_source_streams_to_disk_when_loopback_is_allowed(base, tmp_path):
    target = tmp_path / "source"
    assert fetcher(allow_loopback=True).fetch(f"{base}/video.mp4", target) == len(BODY)
    assert target.read_bytes() == BODY


def test_the_connection_goes_to_the_checked_address(server, tmp_path):
    # "videos.example" exists only in the test resolver: reaching the server proves the
    # socket was opened to the address that was checked, not to a second lookup.
    port = server.server_address[1]
    target = tmp_path / "source"
    assert fetcher(allow_loopback=True).fetch(f"http://videos.example:{port}/relative", target)
    assert target.read_bytes() == BODY


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://169.254.169.254/computeMetadata/v1/", "metadata"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://intranet.videos.example/video.mp4", "private"),  # resolves to 10.0.0.1
        ("http://metadata.videos.example/", "metadata"),
        ("http://metadata.google.internal/computeMetadata/v1/", "metadata"),
        ("ftp://videos.example/video.mp4", "http or https"),
    ],
)
def test_ssrf_targets_are_refused_before_connecting(url, reason, tmp_path, monkeypatch):
    connects = []
    real_connect = fetch_module.urllib3_connection.create_connection

    def recording_connect(address, *args, **kwargs):
        connects.append(address)
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(fetch_module.urllib3_connection, "create_connection", recording_connect)
    with pytest.raises(PermanentFailure, match=reason):
        fetcher().fetch(url, tmp_path / "source")
    assert connects == []
    assert not (tmp_path / "source").exists()


def test_loopback_itself_is_refused_by_default(base, server, tmp_path):
    with pytest.raises(PermanentFailure, match="loopback"):
        fetcher().fetch(f"{base}/video.mp4", tmp_path / "source")
    port = server.server_address[1]
    with pytest.raises(PermanentFailure, match="loopback"):
        fetcher().fetch(f"http://videos.example:{port}/video.mp4", tmp_path / "source")
    assert server.paths == []


@pytest.mark.parametrize(
    "path, reason",
    [
        ("/to-private", "private"),
        ("/to-metadata", "metadata"),
        ("/to-internal-name", "private"),
        ("/to-file", "http or https"),
    ],
)
def test_a_redirect_to_a_refused_target_is_refused(base, server, path, reason, tmp_path):
    with pytest.raises(PermanentFailure, match=reason):
        fetcher(allow_loopback=True).fetch(f"{base}{path}", tmp_path / "source")
    assert server.paths == [path]


def test_the_loopback_setting_never_opens_private_addresses(base, server, tmp_path):
    port = server.server_address[1]
    with pytest.raises(PermanentFailure, match="private"):
        fetcher(allow_loopback=True).fetch(
            f"http://mixed.videos.example:{port}/video.mp4", tmp_path / "source"
        )
    assert server.paths == []


def test_redirects_are_bounded(base, server, tmp_path):
    with pytest.raises(PermanentFailure, match="redirected more than 3 times"):
        fetcher(allow_loopback=True).fetch(f"{base}/loop", tmp_path / "source")
    assert len(server.paths) == 4


def test_the_byte_limit_applies_to_the_declared_size(base, tmp_path):
    with pytest.raises(PermanentFailure, match="over the"):
        fetcher(allow_loopback=True, max_bytes=1000).fetch(f"{base}/video.mp4", tmp_path / "s")


def test_the_byte_limit_applies_while_streaming(base, tmp_path):
    target = tmp_path / "source"
    with pytest.raises(PermanentFailure, match="over the"):
        fetcher(allow_loopback=True).fetch(f"{base}/undeclared", target)
    assert target.stat().st_size <= 2 * len(BODY)


@pytest.mark.parametrize(
    "path, error, reason",
    [
        ("/missing", PermanentFailure, "HTTP 404"),
        ("/busy", TransientFailure, "HTTP 503"),
        ("/stall", TransientFailure, "broke off"),
    ],
)
def test_errors_are_sorted_into_permanent_and_transient(base, tmp_path, path, error, reason):
    with pytest.raises(error, match=reason):
        fetcher(allow_loopback=True).fetch(f"{base}{path}", tmp_path / "source")


def test_a_closed_port_is_transient(tmp_path):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(TransientFailure, match="could not connect|could not be reached"):
        fetcher(allow_loopback=True).fetch(f"http://127.0.0.1:{port}/video.mp4", tmp_path / "s")
