"""Fetching URL sources: the SSRF targets of the issue, limits and error kinds, against
a real HTTP server on loopback (allowed only where a test says so); sources that trickle
or stall, each ended by the fetcher's watchdog; a stop (cancel, drain) during a fetch."""

from __future__ import annotations

import logging
import signal
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from services.transcoder.errors import PermanentFailure, ProcessingStopped, TransientFailure
from services.transcoder.fetch import FetchPolicy, UrlFetcher, system_resolver
from services.transcoder.runner import StopSignal
from shared import pinned as pinned_module
from shared.db import create_engine
from shared.events import ClipSpec
from tests.support.client import FINAL_STATUSES
from tests.support.db import cancel_task, task_row
from tests.support.media import make_video
from tests.support.worker import (
    Notifier,
    insert_task,
    submit,
    wait_for,
    wait_status,
    worker_process,
    worker_thread,
)

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
        min_bytes_per_second=0,
        throughput_grace=1,
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
    real_connect = pinned_module.urllib3_connection.create_connection

    def recording_connect(address, *args, **kwargs):
        connects.append(address)
        return real_connect(address, *args, **kwargs)

    monkeypatch.setattr(pinned_module.urllib3_connection, "create_connection", recording_connect)
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


# --- sources that trickle or stall -----------------------------------------------------------

TRICKLE_GAP = 0.2  # between two bytes: far inside the read timeout, which never trips
SERVE_AT_MOST = 60.0  # a slow source gives up by itself, so a fetch that ignores it still ends


class SlowHandler(BaseHTTPRequestHandler):
    """Sources a read timeout cannot end: one byte at a time, with a declared length,
    chunked, or until the connection closes; headers that never end; a body that never
    starts; a steady stream too slow for its size."""

    protocol_version = "HTTP/1.1"  # for the chunked source

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.close_connection = True
        self.server.requests.append(self.path)
        try:
            self._serve()
        except (BrokenPipeError, ConnectionResetError):
            self.server.cut.append(self.path)  # the fetcher closed the connection

    def _serve(self) -> None:
        path = urlsplit(self.path).path
        if path == "/run.mp4" or (path.startswith("/once/") and self.server.requests.count(self.path) > 1):
            self._send_video()
            return
        path = path.removeprefix("/once")  # slow the first time only
        if path == "/headers":
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Padding: ")
            self._trickle(lambda: b"a")
            return
        self.send_response(200)
        if path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
        elif path in ("/length", "/stall", "/steady"):
            self.send_header("Content-Length", str(len(BODY) * 3 // 2))  # within the limit
        self.send_header("Connection", "close")
        self.end_headers()
        if path == "/chunked":
            self._trickle(lambda: b"1\r\na\r\n")
        elif path in ("/length", "/unsized"):
            self._trickle(lambda: b"a")
        elif path == "/steady":
            self._trickle(lambda: b"a" * 16 * 1024, gap=0.1)  # 160 KiB/s
        else:  # /stall: the headers, then nothing
            self.server.closing.wait(SERVE_AT_MOST)

    def _send_video(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.server.video)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(self.server.video)

    def _trickle(self, piece, gap: float = TRICKLE_GAP) -> None:
        deadline = time.monotonic() + SERVE_AT_MOST
        while time.monotonic() < deadline and not self.server.closing.wait(gap):
            self.wfile.write(piece())
            self.wfile.flush()


@pytest.fixture(scope="module")
def slow_server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowHandler)
    httpd.daemon_threads = True
    httpd.requests, httpd.cut, httpd.closing, httpd.video = [], [], threading.Event(), b""
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.closing.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def slow_base(slow_server):
    slow_server.requests.clear()
    slow_server.cut.clear()
    return f"http://127.0.0.1:{slow_server.server_address[1]}"


# Small limits, so each case ends in seconds: the read timeout is far above the gap
# between two bytes, as a trickle makes sure it is.
QUICK = dict(read_timeout=3, total_timeout=4, min_bytes_per_second=1000, throughput_grace=1)


def timed_fetch(fetcher: UrlFetcher, url: str, destination, **kwargs) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises((PermanentFailure, TransientFailure, ProcessingStopped)) as raised:
        fetcher.fetch(url, destination, **kwargs)
    return raised.value, time.monotonic() - started


@pytest.mark.parametrize("path", ["/length", "/chunked", "/unsized", "/stall", "/headers"])
def test_a_source_that_trickles_or_stalls_fails_for_its_slowness(slow_base, slow_server, path, tmp_path):
    error, elapsed = timed_fetch(fetcher(allow_loopback=True, **QUICK), f"{slow_base}{path}", tmp_path / "s")
    assert isinstance(error, PermanentFailure), error
    assert "the source sends too slowly" in error.reason and "at least 1000 bytes/s" in error.reason
    # Judged once the grace second is over: well before the server would give up.
    assert elapsed < SERVE_AT_MOST / 2, elapsed
    assert slow_server.requests == [path]


@pytest.mark.parametrize("path", ["/length", "/chunked", "/unsized", "/headers", "/steady"])
def test_the_total_timeout_is_a_wall_clock_limit_on_the_whole_download(slow_base, path, tmp_path):
    # No throughput floor: only the deadline can end these.
    unfloored = fetcher(allow_loopback=True, **(QUICK | {"min_bytes_per_second": 0}))
    error, elapsed = timed_fetch(unfloored, f"{slow_base}{path}", tmp_path / "s")
    assert isinstance(error, PermanentFailure), error
    assert error.reason == "the source did not download within 4 s"
    assert elapsed < SERVE_AT_MOST / 2, elapsed


def test_a_stop_during_a_fetch_closes_the_connection_at_once(slow_base, slow_server, tmp_path):
    stop = StopSignal()
    patient = fetcher(allow_loopback=True, read_timeout=10, total_timeout=SERVE_AT_MOST * 2)
    ended: list[tuple[BaseException, float]] = []
    fetching = threading.Thread(
        target=lambda: ended.append(
            timed_fetch(patient, f"{slow_base}/length?to-stop", tmp_path / "s", stop=stop)
        )
    )
    fetching.start()
    wait_until(lambda: slow_server.requests == ["/length?to-stop"], "the request")
    time.sleep(0.5)  # bytes are trickling now
    stopped_at = time.monotonic()
    stop.set("canceled")
    fetching.join(SERVE_AT_MOST * 2)
    (error, elapsed), *_ = ended
    assert isinstance(error, ProcessingStopped) and error.why == "canceled", error
    # The promise is 2 s; the margin is for a loaded machine.
    assert time.monotonic() - stopped_at < 5
    # Earlier tests' cut connections may still be noticed: this one is named by its query.
    wait_until(lambda: "/length?to-stop" in slow_server.cut, "the server to see the connection closed")


def wait_until(predicate, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- through the worker: the task ends, the worker takes the next one ---------------------------

SMALL = ClipSpec(width=320, height=180)


@pytest.fixture
def fsettings(settings):
    """A worker with one slot and the small limits above; loopback stands for a public host."""
    return settings.model_copy(
        update={
            "allow_loopback_sources": True,
            "transcoder_concurrency": 1,
            "transcoder_lease_extension_seconds": 10,
            "retry_initial_seconds": 0.2,
            "fetch_read_timeout_seconds": 3.0,
            "fetch_total_timeout_seconds": 6.0,
            "fetch_min_bytes_per_second": 1000,
            "fetch_throughput_grace_seconds": 1.0,
        }
    )


@pytest.fixture
def patient(fsettings):
    """Limits a slow source cannot reach within a test: only a stop ends its fetch."""
    return fsettings.model_copy(
        update={"fetch_total_timeout_seconds": 300.0, "fetch_min_bytes_per_second": 0}
    )


@pytest.fixture
def engine(fsettings):
    engine = create_engine(fsettings)
    yield engine
    engine.dispose()


@pytest.fixture
def notifier(fsettings, engine):
    with Notifier(fsettings, engine).running() as running:
        yield running


@pytest.fixture(scope="module")
def video_url(slow_server, tmp_path_factory):
    slow_server.video = make_video(tmp_path_factory.mktemp("video") / "run.mp4", seconds=1).read_bytes()
    return f"http://127.0.0.1:{slow_server.server_address[1]}/run.mp4"


def fetch_started(server, path: str) -> None:
    wait_for(lambda: path in server.requests, 60, f"the worker to request {path}")


@pytest.mark.parametrize("path", ["/length", "/chunked", "/stall"])
def test_a_slow_source_fails_its_task_in_its_limit_and_the_worker_takes_the_next(
    fsettings, engine, notifier, slow_server, slow_base, video_url, path
):
    path = f"{path}?{uuid.uuid4()}"
    slow = insert_task(engine, f"{slow_base}{path}", SMALL)
    good = insert_task(engine, video_url, SMALL)
    with worker_thread(fsettings, engine):
        submit(fsettings, slow)
        fetch_started(slow_server, path)
        submit(fsettings, good)  # waits for the one slot
        # Judged after the 1 s grace; the bound is for a loaded machine, far under the
        # minute the server would go on for, or the in-place retries of a transient error.
        failed = wait_status(engine, slow.task_id, *FINAL_STATUSES, timeout=20)
        done = wait_status(engine, good.task_id, *FINAL_STATUSES, timeout=120)
    assert failed["status"] == "failed", failed
    assert failed["failure_reason"].startswith("the source sends too slowly (")
    assert failed["attempt"] == 1 and len(notifier.outcomes(slow.task_id)) == 1
    assert path in slow_server.cut or path.startswith("/stall")  # a stall writes nothing to be cut
    assert done["status"] == "processed", done


def test_a_cancel_during_a_fetch_ends_it_and_the_worker_takes_the_next(
    patient, engine, notifier, slow_server, slow_base, video_url, caplog
):
    caplog.set_level(logging.INFO, logger="services.transcoder")
    path = f"/length?{uuid.uuid4()}"
    task = insert_task(engine, f"{slow_base}{path}", SMALL)
    good = insert_task(engine, video_url, SMALL)
    with worker_thread(patient, engine):
        submit(patient, task)
        fetch_started(slow_server, path)
        cancel_task(engine, task.task_id)
        # The worker sees the cancel within CANCEL_POLL_SECONDS (1 s), the fetch ends
        # within 2 s of that; the bound leaves room for a loaded machine.
        wait_for(lambda: path in slow_server.cut, 15, "the fetch's connection to be closed")
        wait_for(
            lambda: any(
                r.getMessage().startswith("canceled:") and getattr(r, "task_id", None) == str(task.task_id)
                for r in caplog.records
            ),
            10,
            "the worker to ack the canceled task",
        )
        submit(patient, good)
        done = wait_status(engine, good.task_id, *FINAL_STATUSES, timeout=120)
    assert done["status"] == "processed", done
    assert task_row(engine, task.task_id)["status"] == "canceled"
    assert notifier.outcomes(task.task_id) == []
    assert [s[0] for s in notifier.statuses(task.task_id)][-1] == "canceled"


def test_a_drain_during_a_fetch_hands_the_task_back_and_the_next_worker_finishes_it(
    patient, engine, notifier, slow_server, slow_base, tmp_path, video_url
):
    path = f"/once/length?{uuid.uuid4()}"  # slow the first time, the video the second
    task = insert_task(engine, f"{slow_base}{path}", SMALL)
    impatient = patient.model_copy(update={"drain_grace_seconds": 1.0})
    with worker_process(impatient, tmp_path / "first.log") as first:
        submit(impatient, task)
        fetch_started(slow_server, path)
        first.process.send_signal(signal.SIGTERM)
        # The grace (1 s), then the fetch ends within 2 s; the rest is the process's own
        # shutdown on a loaded machine. A fetch that ignored the stop would run a minute.
        assert first.process.wait(40) == 0, first.log()
    assert "handing the task back" in first.log()
    assert path in slow_server.cut
    assert task_row(engine, task.task_id)["status"] == "processing"
    with worker_thread(patient, engine):
        row = wait_status(engine, task.task_id, *FINAL_STATUSES, timeout=120)
    assert (row["status"], row["attempt"]) == ("processed", 2), row
    assert len(notifier.outcomes(task.task_id)) == 1


def test_a_refused_fetch_tells_the_owner_the_kind_of_address_and_the_log_the_address(
    fsettings, engine, notifier, caplog
):
    caplog.set_level(logging.WARNING, logger="services.transcoder.fetch")
    strict = fsettings.model_copy(update={"allow_loopback_sources": False})
    task = insert_task(engine, "http://intranet.videos.example/run.mp4", SMALL)  # 10.0.0.1
    with worker_thread(strict, engine, resolver=resolver):
        submit(strict, task)
        row = wait_status(engine, task.task_id, *FINAL_STATUSES, timeout=60)
    assert row["failure_reason"] == "the source host resolves to a private address, which is not allowed"
    assert row["attempt"] == 1
    assert any(
        "intranet.videos.example" in r.getMessage() and "10.0.0.1" in r.getMessage() for r in caplog.records
    )
