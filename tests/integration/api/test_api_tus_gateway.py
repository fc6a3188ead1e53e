"""Resumable uploads through the gateway with real tus clients (tuspy and tus-js-client
under node), and an upload whose api process is killed halfway, resumed through the
processes gunicorn starts in its place and turned into a task the transcoder processes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests
from tusclient import client as tus_client

from shared.storage import storage_client
from tests.support.client import PlatformClient
from tests.support.media import make_source
from tests.support.tus import TUS, patch_headers, tus_metadata

PROJECT_ROOT = Path(__file__).resolve().parents[3]
JS_CLIENT = PROJECT_ROOT / "tests" / "js" / "tus_upload.mjs"
NODE = "/usr/bin/node"
# The size the platform's users upload from phones (the api's limit is 500 MB).
BIG_BYTES = 200 * 1024 * 1024
_WRITE = 4 * 1024 * 1024


def _padded_video(source: Path, target: Path, size: int) -> Path:
    """``source`` followed by a 'free' MP4 box of random bytes, ``size`` bytes in all: a
    valid video that ffmpeg reads as the short one."""
    head = source.read_bytes()
    padding = size - len(head)
    with target.open("wb") as out:
        out.write(head)
        out.write(padding.to_bytes(4, "big") + b"free")
        left = padding - 8
        while left:
            piece = os.urandom(min(_WRITE, left))
            out.write(piece)
            left -= len(piece)
    return target


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while piece := source.read(_WRITE):
            digest.update(piece)
    return digest.hexdigest()


def _sha256_stored(bucket: str, upload_id: str) -> str:
    digest = hashlib.sha256()
    blob = storage_client().bucket(bucket).blob(f"uploads/{upload_id}/source")
    with blob.open("rb", chunk_size=_WRITE) as stored:
        while piece := stored.read(_WRITE):
            digest.update(piece)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def big_video(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tus")
    return _padded_video(make_source(folder / "short.mp4", seconds=2), folder / "run.mp4", BIG_BYTES)


@pytest.fixture
def athlete(local_stack) -> PlatformClient:
    return PlatformClient.sign_up(local_stack.base_url)


def _submit(athlete: PlatformClient, upload_id: str) -> dict:
    response = athlete.session.post(athlete.url("/tasks"), json={"upload": upload_id}, timeout=60)
    assert response.status_code == 202, response.text
    return response.json()


@pytest.mark.slow
def test_tuspy_uploads_200_mb_through_the_gateway(local_stack, athlete, big_video):
    token = athlete.session.headers["Authorization"]
    tus = tus_client.TusClient(f"{local_stack.base_url}/uploads", headers={"Authorization": token})
    with big_video.open("rb") as source:  # tuspy leaves a file it opens itself open
        uploader = tus.uploader(
            file_stream=source,
            chunk_size=32 * 1024 * 1024,
            metadata={"filename": "run.mp4", "filetype": "video/mp4"},
        )
        uploader.upload()
    upload_id = uploader.url.rsplit("/", 1)[-1]
    assert _sha256_stored(local_stack.settings.uploads_bucket, upload_id) == _sha256_file(big_video)
    task = _submit(athlete, upload_id)
    assert task["source"] == {"kind": "upload", "filename": "run.mp4"}


@pytest.mark.slow
def test_tus_js_client_uploads_200_mb_through_the_gateway(local_stack, athlete, big_video):
    token = athlete.session.headers["Authorization"].split(" ", 1)[1]
    done = subprocess.run(
        [NODE, str(JS_CLIENT), f"{local_stack.base_url}/uploads", token, str(big_video)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=JS_CLIENT.parent,
    )
    assert done.returncode == 0, done.stderr
    upload_id = done.stdout.strip().rsplit("/", 1)[-1]
    assert _sha256_stored(local_stack.settings.uploads_bucket, upload_id) == _sha256_file(big_video)
    assert _submit(athlete, upload_id)["source"] == {"kind": "upload", "filename": "run.mp4"}


def _api_workers(local_stack) -> list[psutil.Process]:
    [api] = [process for _, process in local_stack.stack.processes if process.name == "api"]
    return psutil.Process(api.popen.pid).children()


def _head(base: str, athlete: PlatformClient, upload_id: str, timeout: float = 60) -> requests.Response:
    """HEAD through the gateway, waiting out the moments no api worker is up yet.

    The request may wait in the api's listen queue while gunicorn boots the worker that
    replaces a killed one (several seconds of imports, more on a loaded machine), so
    each try may take what is left of ``timeout``.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = max(deadline - time.monotonic(), 1.0)
        try:
            response = athlete.session.head(f"{base}/uploads/{upload_id}", headers=TUS, timeout=left)
            if response.status_code != 503 or time.monotonic() > deadline:
                return response
        except requests.ConnectionError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


@pytest.mark.slow
def test_an_upload_whose_api_process_dies_halfway_resumes_through_another_and_is_processed(
    local_stack, athlete, tmp_path, short_source
):
    base = local_stack.base_url
    video = _padded_video(short_source, tmp_path / "run.mp4", 48 * 1024 * 1024)
    content = video.read_bytes()
    created = athlete.session.post(
        f"{base}/uploads",
        headers=TUS
        | {"Upload-Length": str(len(content)), "Upload-Metadata": tus_metadata(filename="run.mp4")},
        timeout=30,
    )
    assert created.status_code == 201, created.text
    upload_id = created.headers["Location"].rsplit("/", 1)[-1]
    workers = _api_workers(local_stack)
    half = len(content) // 2

    def body():
        for start in range(0, len(content), 1024 * 1024):
            if start >= half and workers:
                time.sleep(0.5)  # the api has read the first half
                for worker in workers:
                    worker.send_signal(signal.SIGKILL)
                psutil.wait_procs(workers, timeout=10)
                workers.clear()
            yield content[start : start + 1024 * 1024]

    try:
        cut = athlete.session.patch(
            f"{base}/uploads/{upload_id}", data=body(), headers=patch_headers(0), timeout=60
        )
        assert cut.status_code >= 500, cut.text  # the gateway lost the api mid-body
    except requests.ConnectionError:
        pass  # or the client saw the connection go
    assert not workers

    head = _head(base, athlete, upload_id)
    assert head.status_code == 200, head.text
    offset = int(head.headers["Upload-Offset"])
    assert 0 < offset <= half + 1024 * 1024
    assert {p.pid for p in _api_workers(local_stack)}  # gunicorn started new workers

    # A real client resumes from the offset the new process reports.
    tus = tus_client.TusClient(
        f"{base}/uploads", headers={"Authorization": athlete.session.headers["Authorization"]}
    )
    with video.open("rb") as source:
        uploader = tus.uploader(
            file_stream=source, url=f"{base}/uploads/{upload_id}", chunk_size=16 * 1024 * 1024
        )
        assert uploader.offset == offset
        uploader.upload()
    assert (
        _sha256_stored(local_stack.settings.uploads_bucket, upload_id) == hashlib.sha256(content).hexdigest()
    )

    task = _submit(athlete, upload_id)
    finished = athlete.wait_for(task["id"], timeout=300)
    assert finished["status"] == "processed", finished
    assert finished["clips"]


def test_a_patch_the_client_cuts_midway_keeps_what_arrived_and_resumes(local_stack, athlete):
    import http.client
    from urllib.parse import urlsplit

    base = local_stack.base_url
    content = os.urandom(3 * 1024 * 1024 + 4321)
    created = athlete.session.post(
        f"{base}/uploads", headers=TUS | {"Upload-Length": str(len(content))}, timeout=30
    )
    upload_id = created.headers["Location"].rsplit("/", 1)[-1]
    parts = urlsplit(base)
    sent = 1024 * 1024 + 999  # ends inside a 256 KiB chunk
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("PATCH", f"/uploads/{upload_id}")
    headers = {"Authorization": athlete.session.headers["Authorization"]} | patch_headers(0)
    for name, value in (headers | {"Content-Length": str(len(content))}).items():
        conn.putheader(name, value)
    conn.endheaders()
    conn.send(content[:sent])
    time.sleep(1)
    conn.sock.close()  # the phone lost its network

    # The cut PATCH ends on the server side: then the offset is what arrived, never more.
    deadline = time.monotonic() + 30
    while True:
        offset = int(_head(base, athlete, upload_id).headers["Upload-Offset"])
        probe = athlete.session.patch(
            f"{base}/uploads/{upload_id}", data=b"", headers=patch_headers(offset), timeout=30
        )
        if probe.status_code != 409 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert probe.status_code == 204, probe.text
    assert 0 < offset <= sent
    rest = athlete.session.patch(
        f"{base}/uploads/{upload_id}", data=content[offset:], headers=patch_headers(offset), timeout=60
    )
    assert rest.status_code == 204, rest.text
    assert int(rest.headers["Upload-Offset"]) == len(content)
    assert (
        _sha256_stored(local_stack.settings.uploads_bucket, upload_id) == hashlib.sha256(content).hexdigest()
    )
    athlete.session.delete(f"{base}/uploads/{upload_id}", headers=TUS, timeout=30)
