"""Resource exhaustion through the gateway: an absurd declared body, clients that
stall, sources that would decode to a huge picture or run for hours, a flood of
submissions, and many uploads at once (the api's memory stays bounded).

The figures these tests measure (time to cut a stalled client, the api's RSS under
100 concurrent uploads) are printed (``pytest -s``) and recorded in docs/security.md;
the assertions are on outcomes and bounds, never on speed."""

from __future__ import annotations

import http.client
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import psutil
import pytest

from infra.local.process import RssSampler
from shared.storage import storage_client
from tests.support.security import Gateway, huge_picture_mkv, ten_hour_video, upload, wait_for_outcome

pytestmark = pytest.mark.security

MiB = 1024 * 1024
# The first bytes of an MP4 (an ftyp box): what the api's sniffing accepts as a video.
MP4_HEAD = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


def _uploads(local_stack) -> set[str]:
    return {blob.name for blob in storage_client().list_blobs(local_stack.settings.uploads_bucket)}


def _gateway_address(local_stack) -> tuple[str, int]:
    parts = urlsplit(local_stack.base_url)
    return parts.hostname, parts.port


def _api_log_lines(local_stack) -> list[str]:
    return (local_stack.logs_dir / "api.log").read_text(errors="replace").splitlines()


# --- declared size --------------------------------------------------------------------------


def test_a_declared_10_gb_body_gets_413_at_once_and_nothing_is_stored(local_stack, gateway, athlete):
    before = _uploads(local_stack)
    connection = http.client.HTTPConnection(*_gateway_address(local_stack), timeout=30)
    try:
        connection.putrequest("POST", "/tasks")
        connection.putheader("Authorization", f"Bearer {athlete.token}")
        connection.putheader("Content-Type", "multipart/form-data; boundary=b")
        connection.putheader("Content-Length", str(10 * 1024**3))
        connection.endheaders()  # not one byte of the body is sent
        response = connection.getresponse()
        status, content_type, body = response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()

    assert status == 413 and content_type.startswith("application/json"), body
    assert b'"payload_too_large"' in body
    assert gateway.get("/tasks", user=athlete).json()["tasks"] == []
    assert _uploads(local_stack) == before


# --- slow clients ---------------------------------------------------------------------------


def _seconds_until_closed(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Wait for the peer to close ``sock``; returns the wait and what it sent meanwhile."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    while True:
        chunk = sock.recv(65536)  # socket.timeout past ``limit``: the test fails
        if not chunk:
            return time.monotonic() - started, received
        received += chunk


def test_a_stalled_upload_is_cut_and_the_api_thread_freed(local_stack, gateway, athlete):
    # One stalled upload per api thread: while they hold, no thread is left for anyone.
    config = local_stack.stack.config
    stalled = config.gunicorn_workers * config.gunicorn_threads
    api_requests_before = len([line for line in _api_log_lines(local_stack) if '"POST /tasks' in line])
    head = (
        f"POST /tasks HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer {athlete.token}\r\n"
        "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000\r\n\r\n"
        '--b\r\nContent-Disposition: form-data; name="file"; filename="run.mp4"\r\n\r\n'
    ).encode()
    sockets = []
    for _ in range(stalled):
        sock = socket.create_connection(_gateway_address(local_stack))
        sock.sendall(head + MP4_HEAD + os.urandom(16 * 1024))  # then nothing more
        sockets.append(sock)
    try:
        waits = [_seconds_until_closed(sock, limit=180) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    print(f"\n{stalled} stalled uploads cut after {max(w for w, _ in waits):.1f} s")

    # The gateway closed each connection without an answer (its 408); behind it, each
    # api request ended (the body stopped inside the file) and its thread is free again.
    assert all(received == b"" for _, received in waits)
    deadline = time.monotonic() + 60
    while True:
        ended = [line for line in _api_log_lines(local_stack) if '"POST /tasks' in line][api_requests_before:]
        if len(ended) >= stalled or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(ended) == stalled and all('" 400 ' in line for line in ended), ended
    assert gateway.get("/tasks", user=athlete).json()["tasks"] == []


def test_a_client_that_never_finishes_its_headers_is_cut(local_stack):
    sock = socket.create_connection(_gateway_address(local_stack))
    try:
        sock.sendall(b"POST /tasks HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
        waited, received = _seconds_until_closed(sock, limit=120)
    finally:
        sock.close()
    print(f"\nstalled headers cut after {waited:.1f} s")
    assert received == b""


# --- sources past the limits: failed before any encoding --------------------------------------


@pytest.mark.parametrize(
    "make, reason",
    [
        (huge_picture_mkv, "16000x16000, over the 7680x4320 limit"),
        (ten_hour_video, "lasts 36000 s, over the 1800 s limit"),
    ],
)
def test_a_source_past_a_limit_fails_at_the_probe(local_stack, gateway, athlete, tmp_path, make, reason):
    source = make(tmp_path / "source.mkv")
    assert source.stat().st_size < 100_000  # tiny on disk, enormous once decoded or played
    created = upload(gateway, athlete, "source.mkv", source.read_bytes())
    assert created.status_code == 202, created.text

    task = wait_for_outcome(gateway, athlete, created.json()["id"])

    # The reason is the probe's: the limits are checked before ffmpeg runs at all.
    assert task["status"] == "failed" and reason in task["failure_reason"], task
    assert task["clips"] == []


# --- a flood of submissions ------------------------------------------------------------------


def test_1000_submissions_from_one_user_are_rate_limited(local_stack, athlete, rival):
    limit = local_stack.settings.tasks_per_minute_per_user
    # A URL refused at submit (422): the limiter runs first, and no task is created.
    body = {"url": "http://10.0.0.1/run.mp4"}

    def submit(_: int) -> tuple[int, str | None, str]:
        client = Gateway(local_stack.base_url)
        try:
            response = client.post("/tasks", user=athlete, json=body)
            return response.status_code, response.headers.get("Retry-After"), response.json()["error"]["code"]
        finally:
            client.close()

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(submit, range(1000)))
    elapsed = time.monotonic() - started
    counted = [a for a in answers if a[0] == 422]
    limited = [a for a in answers if a[0] == 429]
    print(f"\n1000 submissions in {elapsed:.1f} s: {len(counted)} checked, {len(limited)} refused with 429")

    assert len(counted) + len(limited) == 1000
    # A fixed one-minute window: the flood may straddle two windows, never more.
    assert limit <= len(counted) <= 2 * limit
    assert {code for _, _, code in limited} == {"rate_limited"}
    assert all(retry is not None and 1 <= int(retry) <= 60 for _, retry, _ in limited)
    gateway = Gateway(local_stack.base_url)
    try:
        assert gateway.get("/tasks", user=athlete).json()["tasks"] == []
        # The limit is the flooding user's alone.
        assert gateway.post("/tasks", user=rival, json=body).status_code == 422
    finally:
        gateway.close()


# --- many uploads at once ----------------------------------------------------------------------


def test_100_concurrent_uploads_keep_the_api_memory_bounded(local_stack, minted_user):
    config = local_stack.stack.config
    size = 2 * MiB
    users = [minted_user() for _ in range(5)]  # 20 each, under the per-user limit
    api = next(process for _, process in local_stack.stack.processes if process.name == "api")
    contents = [MP4_HEAD + os.urandom(size - len(MP4_HEAD)) for _ in range(4)]

    def send(n: int) -> tuple[int, str]:
        client = Gateway(local_stack.base_url)
        try:
            response = upload(
                client, users[n % len(users)], f"run-{n}.mp4", contents[n % len(contents)], timeout=120
            )
            return response.status_code, response.json().get("id", "")
        finally:
            client.close()

    # Warm up: every api process has built its storage client and upload path once.
    warm_up = [send(n) for n in range(4 * config.gunicorn_workers)]
    assert [status for status, _ in warm_up] == [202] * len(warm_up)
    sampler = RssSampler(psutil.Process(api.pid), tree=True)
    baseline = sampler.rss()
    with sampler, ThreadPoolExecutor(max_workers=100) as pool:
        answers = list(pool.map(send, range(100, 200)))
    peak = sampler.peak
    growth = peak - baseline
    per_thread = min(size, local_stack.settings.upload_chunk_bytes)
    threads = config.gunicorn_workers * config.gunicorn_threads
    print(
        f"\napi RSS (master + {config.gunicorn_workers} workers x {config.gunicorn_threads} threads): "
        f"{baseline / MiB:.0f} MiB before, {peak / MiB:.0f} MiB peak during 100 concurrent "
        f"{size // MiB} MiB uploads (+{growth / MiB:.0f} MiB; {len(sampler.samples)} samples)"
    )

    try:
        assert [status for status, _ in answers] == [202] * 100
        stored = _uploads(local_stack)
        assert all(f"uploads/{task_id}/source" in stored for _, task_id in answers)
        # At most one upload per api thread is in the api at a time, each holding at
        # most one chunk (here the whole 2 MiB file) plus the client's copy of it; the
        # other uploads wait in the gateway, not in the api's memory.
        budget = threads * 3 * per_thread + 64 * MiB
        assert growth < budget < 100 * size
    finally:
        # Cancel them: the worker need not probe 100 meaningless files.
        cleaner = Gateway(local_stack.base_url)
        try:
            for n, (_, task_id) in [*enumerate(warm_up), *enumerate(answers, start=100)]:
                if task_id:
                    cleaner.delete(f"/tasks/{task_id}", user=users[n % len(users)])
        finally:
            cleaner.close()
