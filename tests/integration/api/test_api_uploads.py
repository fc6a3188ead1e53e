"""POST /tasks with a multipart file: streamed to the uploads bucket, sniffed, size-limited."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import uuid

import pytest
import requests
from google.api_core.exceptions import Conflict

from infra.local.process import http_probe
from shared.storage import storage_client
from shared.tables import tasks
from tests.support.api import api_process, assert_error, multipart, object_names, pull_events
from tests.support.db import count_rows

CHUNK = 256 * 1024


def _upload(client, user, content: bytes, filename: str = "run.mp4", *extra, headers=None):
    body, content_type = multipart(("file", filename, content), *extra)
    return client.post("/tasks", data=body, content_type=content_type, headers=user.headers | (headers or {}))


def test_an_upload_is_stored_as_the_tasks_original_and_published(client, alice, video_bytes, api_settings):
    response = _upload(client, alice, video_bytes, filename="../clips/My run.mp4")

    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    task_id = uuid.UUID(body["id"])
    assert body["source"] == {"kind": "upload", "filename": "My run.mp4"}
    assert body["links"]["original"] == f"/tasks/{task_id}/original"
    blob = storage_client().bucket(api_settings.uploads_bucket).blob(f"uploads/{task_id}/source")
    assert blob.download_as_bytes() == video_bytes
    blob.reload()
    assert blob.content_type == "video/mp4"

    [event] = pull_events(api_settings, api_settings.subscription_transcoder, task_id=task_id)
    assert event.source == f"gs://{api_settings.uploads_bucket}/uploads/{task_id}/source"

    original = client.get(f"/tasks/{task_id}/original", headers=alice.headers)
    assert original.status_code == 200 and original.data == video_bytes
    assert original.headers["Content-Disposition"] == f'attachment; filename="{task_id}-original.mp4"'


def test_a_file_larger_than_one_chunk_goes_up_in_resumable_chunks(make_app, api_settings, alice, video_bytes):
    client = make_app(api_settings, upload_chunk_bytes=CHUNK).test_client()
    # A real MP4 head followed by 3.5 chunks of padding: several chunk uploads and a short last one.
    content = video_bytes + os.urandom(3 * CHUNK + CHUNK // 2)
    response = _upload(client, alice, content)
    assert response.status_code == 202, response.get_data(as_text=True)
    task_id = response.get_json()["id"]
    stored = storage_client().bucket(api_settings.uploads_bucket).blob(f"uploads/{task_id}/source")
    assert stored.download_as_bytes() == content


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"hello, this is plain text and not a video",
        b"%PDF-1.7\n" + b"0" * 9000,
        b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
    ],
)
def test_content_that_is_not_a_video_container_gets_415(client, engine, alice, api_settings, content):
    response = _upload(client, alice, content, filename="run.mp4")
    assert_error(response, 415, "not_a_video")
    assert count_rows(engine, tasks) == 0
    assert object_names(api_settings.uploads_bucket) == []


@pytest.fixture
def pending_uploads_bucket(api_settings) -> str:
    """An uploads bucket of its own for a test that cancels an upload session midway.

    The storage emulator does not implement cancelling a resumable session (Cloud
    Storage does: DELETE on the session URI), so the cancelled session stays pending
    and the emulator refuses to delete the bucket; it goes away with the emulator.
    """
    name = f"idrl-uploads-cancel-{uuid.uuid4().hex[:10]}"
    storage_client().create_bucket(name)
    yield name
    with contextlib.suppress(Conflict):
        storage_client().bucket(name).delete(force=True)


def test_a_streamed_file_past_the_limit_gets_413_and_leaves_no_object(
    make_app, api_settings, engine, alice, video_bytes, pending_uploads_bucket
):
    limit = 2 * CHUNK
    client = make_app(
        api_settings, upload_chunk_bytes=CHUNK, max_upload_bytes=limit, uploads_bucket=pending_uploads_bucket
    ).test_client()
    # Past the limit only after more than one chunk was already sent to storage.
    content = video_bytes + os.urandom(limit + 1 - len(video_bytes))
    response = _upload(client, alice, content)
    assert_error(response, 413, "payload_too_large")
    assert count_rows(engine, tasks) == 0
    assert object_names(pending_uploads_bucket) == []

    exactly = video_bytes + os.urandom(limit - len(video_bytes))
    assert _upload(client, alice, exactly).status_code == 202


def test_a_declared_length_past_the_limit_gets_413_before_the_body_is_read(make_app, api_settings, alice):
    client = make_app(api_settings, max_upload_bytes=CHUNK).test_client()
    response = client.post(
        "/tasks",
        data=b"--b\r\n",
        headers=alice.headers,
        content_type="multipart/form-data; boundary=b",
        environ_overrides={"CONTENT_LENGTH": str(CHUNK + 64 * 1024 + 1)},
    )
    assert_error(response, 413, "payload_too_large")


@pytest.mark.parametrize(
    "extra, status, code",
    [
        (("status", None, b"processed"), 422, "field_not_allowed"),
        (("owner", None, b"someone-else"), 422, "field_not_allowed"),
        (("extra", "more.mp4", b"more"), 422, "field_not_allowed"),
        (("file", "again.mp4", b"more"), 422, "field_not_allowed"),
    ],
)
def test_other_multipart_fields_are_refused_and_nothing_is_kept(
    client, engine, alice, api_settings, video_bytes, extra, status, code
):
    response = _upload(client, alice, video_bytes, "run.mp4", extra)
    assert_error(response, status, code)
    assert count_rows(engine, tasks) == 0
    assert object_names(api_settings.uploads_bucket) == []


@pytest.mark.parametrize(
    "body, content_type, code",
    [
        (
            b'--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nnot a file\r\n--b--\r\n',
            "multipart/form-data; boundary=b",
            "missing_file",
        ),
        (b"--b--\r\n", "multipart/form-data; boundary=b", "missing_file"),
        (
            b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n\0\0\0',
            "multipart/form-data; boundary=b",
            "invalid_multipart",
        ),
        (b"no boundary at all", "multipart/form-data", "invalid_multipart"),
        (
            b"--b\r\nX-Nothing: here\r\n\r\ndata\r\n--b--\r\n",
            "multipart/form-data; boundary=b",
            "invalid_multipart",
        ),
    ],
)
def test_malformed_multipart_bodies_get_400(client, engine, alice, body, content_type, code):
    response = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers)
    assert_error(response, 400, code)
    assert count_rows(engine, tasks) == 0


def test_an_upload_retried_with_its_idempotency_key_gives_the_same_task(
    client, engine, alice, api_settings, video_bytes
):
    key = {"Idempotency-Key": "upload-0001"}
    first = _upload(client, alice, video_bytes, headers=key)
    again = _upload(client, alice, video_bytes, headers=key)
    other = _upload(client, alice, video_bytes + b"\0", headers=key)

    assert first.status_code == 202 and again.status_code == 200
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert_error(other, 422, "idempotency_key_mismatch")
    assert count_rows(engine, tasks) == 1
    assert object_names(api_settings.uploads_bucket) == [f"uploads/{first.get_json()['id']}/source"]


def test_an_upload_trickled_past_its_time_limit_is_cut_off_with_408(
    api_settings, engine, alice, jwks, video_bytes, tmp_path
):
    # Under gunicorn, as in production: the deadline cuts the client's socket.
    process, base_url = api_process(
        api_settings, jwks, tmp_path / "api.log", UPLOAD_TIMEOUT_SECONDS="2", OUTBOX_RELAY_ENABLED="false"
    )
    body, content_type = multipart(("file", "run.mp4", video_bytes))
    host, port = base_url.removeprefix("http://").split(":")
    process.start()
    try:
        process.wait_ready(http_probe(f"{base_url}/healthz"), timeout=60)
        with socket.create_connection((host, int(port)), timeout=30) as client:
            head = (
                f"POST /tasks HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nAuthorization: {alice.headers['Authorization']}\r\n\r\n"
            )
            client.sendall(head.encode() + body[:200])
            answer = b""
            for offset in range(200, min(len(body), 400)):  # a byte every 0.1 s: 20 s, ten times the limit
                try:
                    client.sendall(body[offset : offset + 1])
                except OSError:
                    break  # the api closed the connection
                client.settimeout(0.1)
                try:
                    answer += client.recv(65536)
                except TimeoutError:
                    continue
                if b"\r\n\r\n" in answer:
                    break
            client.settimeout(10)
            while b"}}" not in answer:
                data = client.recv(65536)
                if not data:
                    break
                answer += data
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408"), answer[:200]
        assert json.loads(rest.partition(b"\r\n\r\n")[2])["error"]["code"] == "request_timeout"
        # The thread is free again: the same process answers at once.
        assert requests.get(f"{base_url}/tasks", headers=alice.headers, timeout=10).status_code == 200
    finally:
        process.stop()
    assert count_rows(engine, tasks) == 0
    assert object_names(api_settings.uploads_bucket) == []
