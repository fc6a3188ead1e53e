"""Resumable uploads (tus 1.0.0) at /uploads, in process against the test's PostgreSQL
and Cloud Storage emulator: the protocol, its refusals (each leaving the stored bytes and
the offset as they were), the expiry sweep, and the task a finished upload becomes."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid

import pytest
from sqlalchemy import func, select

from services.api.tus_sweep import sweep_expired
from shared.storage import storage_client
from shared.tables import tus_uploads
from tests.support.api import assert_error, object_names, pull_events
from tests.support.db import count_rows, expire_uploads
from tests.support.tus import OFFSET_STREAM, TUS, patch_headers, tus_metadata

QUANTUM = 256 * 1024


@pytest.fixture
def tus_app(make_app, api_settings):
    # Small chunks: a few hundred kilobytes already cross several Cloud Storage chunks.
    return make_app(api_settings, upload_chunk_bytes=QUANTUM, tus_max_uploads_in_progress=3)


@pytest.fixture
def tus_client(tus_app):
    return tus_app.test_client()


@pytest.fixture(autouse=True)
def _sweep_everything_after(engine):
    """Every upload a test leaves is expired and swept: no session outlives the test."""
    yield
    expire_uploads(engine)
    sweep_expired(engine, storage_client())


@pytest.fixture
def content(video_bytes) -> bytes:
    """A real video followed by noise: about 1.3 MB, not a multiple of 256 KiB."""
    return video_bytes + os.urandom(5 * QUANTUM + 12345 - len(video_bytes) % QUANTUM)


def _create(client, user, length: int, **metadata: str) -> str:
    headers = TUS | user.headers | {"Upload-Length": str(length)}
    if metadata:
        headers["Upload-Metadata"] = tus_metadata(**metadata)
    response = client.post("/uploads", headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.headers["Upload-Expires"]
    upload_id = response.headers["Location"].rsplit("/", 1)[-1]
    assert response.headers["Location"] == f"/uploads/{upload_id}"
    return upload_id


def _patch(client, user, upload_id: str, offset: int, data: bytes, **headers: str):
    return client.patch(
        f"/uploads/{upload_id}", data=data, headers=user.headers | patch_headers(offset, **headers)
    )


def _offset(client, user, upload_id: str) -> int:
    response = client.head(f"/uploads/{upload_id}", headers=TUS | user.headers)
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    return int(response.headers["Upload-Offset"])


def _stored(settings, upload_id: str) -> bytes:
    return (
        storage_client()
        .bucket(settings.uploads_bucket)
        .blob(f"uploads/{upload_id}/source")
        .download_as_bytes()
    )


def _upload(client, user, content: bytes, pieces: list[int], **metadata: str) -> str:
    upload_id = _create(client, user, len(content), **metadata)
    offset = 0
    for size in pieces + [len(content)]:
        piece = content[offset : offset + size]
        if not piece:
            break
        response = _patch(client, user, upload_id, offset, piece)
        assert response.status_code == 204, response.get_data(as_text=True)
        offset += len(piece)
        assert int(response.headers["Upload-Offset"]) == offset == _offset(client, user, upload_id)
    return upload_id


def test_options_advertises_the_version_the_extensions_and_the_size_limit(tus_client, api_settings):
    response = tus_client.options("/uploads")
    assert response.status_code == 204
    assert response.headers["Tus-Version"] == "1.0.0"
    assert set(response.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "expiration",
    }
    assert int(response.headers["Tus-Max-Size"]) == api_settings.max_upload_bytes


def test_an_upload_in_odd_pieces_is_stored_whole_and_becomes_a_task_once(
    tus_client, alice, content, api_settings
):
    # Pieces that end inside a 256 KiB chunk, exactly on one, and across several.
    upload_id = _upload(
        tus_client, alice, content, [1000, QUANTUM - 1000, 3 * QUANTUM + 7], filename="run.mp4"
    )
    head = tus_client.head(f"/uploads/{upload_id}", headers=TUS | alice.headers)
    assert int(head.headers["Upload-Length"]) == len(content)
    assert hashlib.sha256(_stored(api_settings, upload_id)).digest() == hashlib.sha256(content).digest()

    submitted = tus_client.post("/tasks", json={"upload": upload_id}, headers=alice.headers)
    assert submitted.status_code == 202, submitted.get_data(as_text=True)
    task = submitted.get_json()
    assert task["id"] == upload_id
    assert task["source"] == {"kind": "upload", "filename": "run.mp4"}
    [event] = pull_events(api_settings, api_settings.subscription_transcoder, task_id=uuid.UUID(upload_id))
    assert event.source == f"gs://{api_settings.uploads_bucket}/uploads/{upload_id}/source"

    again = tus_client.post("/tasks", json={"upload": upload_id}, headers=alice.headers)
    assert again.status_code == 200 and again.get_json()["id"] == upload_id
    listed = tus_client.get("/tasks", headers=alice.headers).get_json()["tasks"]
    assert [t["id"] for t in listed] == [upload_id]
    original = tus_client.get(f"/tasks/{upload_id}/original", headers=alice.headers)
    assert original.status_code == 200 and original.data == content
    assert original.mimetype == "video/mp4"


def test_creation_with_upload_takes_the_first_bytes_in_the_post(tus_client, alice, content, api_settings):
    first = content[: QUANTUM + 5]
    response = tus_client.post(
        "/uploads",
        data=first,
        headers=TUS | alice.headers | {"Upload-Length": str(len(content)), "Content-Type": OFFSET_STREAM},
    )
    assert response.status_code == 201
    assert int(response.headers["Upload-Offset"]) == len(first)
    upload_id = response.headers["Location"].rsplit("/", 1)[-1]
    assert _patch(tus_client, alice, upload_id, len(first), content[len(first) :]).status_code == 204
    assert _stored(api_settings, upload_id) == content


def test_creation_with_a_body_past_its_length_gets_413_and_creates_nothing(tus_client, tus_app, alice):
    response = tus_client.post(
        "/uploads",
        data=b"x" * 1001,
        headers=TUS | alice.headers | {"Upload-Length": "1000", "Content-Type": OFFSET_STREAM},
    )
    assert_error(response, 413, "past_upload_length")
    assert count_rows(tus_app.extensions["engine"], tus_uploads) == 0


def _partial(client, user, content: bytes) -> tuple[str, int]:
    """An upload holding its first 300 000 bytes (some in Cloud Storage, some in the tail)."""
    upload_id = _create(client, user, len(content), filename="run.mp4")
    assert _patch(client, user, upload_id, 0, content[:300_000]).status_code == 204
    return upload_id, 300_000


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"Upload-Offset": "299999"}, b"x", 409, "upload_offset_mismatch"),
        ({"Upload-Offset": "0"}, b"x", 409, "upload_offset_mismatch"),
        ({"Upload-Offset": "-1"}, b"x", 400, "invalid_upload_offset"),
        ({"Content-Type": "application/octet-stream"}, b"x", 415, "invalid_content_type"),
        ({"Tus-Resumable": "0.2.2"}, b"x", 412, "tus_version_unsupported"),
        ({"Tus-Resumable": None}, b"x", 400, "missing_tus_resumable"),
        ({}, b"x" * 2_000_000, 413, "past_upload_length"),
    ],
    ids=[
        "wrong-offset",
        "old-offset",
        "bad-offset",
        "content-type",
        "wrong-version",
        "no-version",
        "past-length",
    ],
)
def test_a_refused_patch_leaves_the_bytes_and_the_offset_as_they_were(
    tus_client, alice, content, api_settings, headers, body, status, code
):
    upload_id, offset = _partial(tus_client, alice, content)
    sent = alice.headers | patch_headers(offset) | headers
    sent = {name: value for name, value in sent.items() if value is not None}
    response = tus_client.patch(f"/uploads/{upload_id}", data=body, headers=sent)
    assert_error(response, status, code)
    if status == 412:
        assert response.headers["Tus-Version"] == "1.0.0"
    assert _offset(tus_client, alice, upload_id) == offset
    assert _patch(tus_client, alice, upload_id, offset, content[offset:]).status_code == 204
    assert _stored(api_settings, upload_id) == content


def test_a_patch_after_completion_gets_409_and_changes_nothing(tus_client, alice, content, api_settings):
    upload_id = _upload(tus_client, alice, content, [])
    assert_error(_patch(tus_client, alice, upload_id, len(content), b"more"), 409, "upload_complete")
    assert_error(_patch(tus_client, alice, upload_id, len(content), b""), 409, "upload_complete")
    assert _offset(tus_client, alice, upload_id) == len(content)
    assert _stored(api_settings, upload_id) == content


def test_another_users_upload_is_not_found_on_every_method(tus_client, alice, bob, content, api_settings):
    upload_id, offset = _partial(tus_client, alice, content)
    path = f"/uploads/{upload_id}"
    assert tus_client.head(path, headers=TUS | bob.headers).status_code == 404
    assert_error(_patch(tus_client, bob, upload_id, offset, b"x"), 404, "upload_not_found")
    assert_error(tus_client.delete(path, headers=TUS | bob.headers), 404, "upload_not_found")
    assert_error(
        tus_client.post("/tasks", json={"upload": upload_id}, headers=bob.headers), 404, "upload_not_found"
    )
    assert _offset(tus_client, alice, upload_id) == offset
    assert _patch(tus_client, alice, upload_id, offset, content[offset:]).status_code == 204
    # Complete now: still nobody else's.
    assert_error(
        tus_client.post("/tasks", json={"upload": upload_id}, headers=bob.headers), 404, "upload_not_found"
    )
    assert _stored(api_settings, upload_id) == content


def test_every_method_needs_the_token(tus_client, alice, content):
    upload_id, offset = _partial(tus_client, alice, content)
    assert_error(tus_client.post("/uploads", headers=TUS | {"Upload-Length": "10"}), 401, "missing_token")
    assert tus_client.head(f"/uploads/{upload_id}", headers=TUS).status_code == 401
    assert_error(tus_client.patch(f"/uploads/{upload_id}", data=b"x", headers=patch_headers(offset)), 401)
    assert_error(tus_client.delete(f"/uploads/{upload_id}", headers=TUS), 401)


@pytest.mark.parametrize(
    "metadata",
    [
        "filename",  # a key alone is allowed...
        "filename !!!notbase64",
        "filename cnVu,filename cnVu",
        "file name cnVu",
        "filename cnV",  # Base64 without its padding
        ",",
        "filename /w==",  # not UTF-8
        "filename " + "QUFB" * 1100,  # past 4 KiB
    ],
)
def test_garbage_metadata_gets_400_and_creates_nothing(tus_client, tus_app, alice, metadata):
    headers = TUS | alice.headers | {"Upload-Length": "1000", "Upload-Metadata": metadata}
    response = tus_client.post("/uploads", headers=headers)
    if metadata == "filename":
        assert response.status_code == 201
        return
    assert_error(response, 400, "invalid_metadata")
    assert count_rows(tus_app.extensions["engine"], tus_uploads) == 0


@pytest.mark.parametrize(
    ("length", "status", "code"),
    [
        ("0", 400, "invalid_upload_length"),
        ("abc", 400, "invalid_upload_length"),
        (None, 400, "missing_upload_length"),
    ],
)
def test_a_bad_upload_length_gets_400(tus_client, alice, length, status, code):
    headers = TUS | alice.headers | ({"Upload-Length": length} if length is not None else {})
    assert_error(tus_client.post("/uploads", headers=headers), status, code)


def test_a_length_over_the_limit_gets_413(make_app, api_settings, alice):
    client = make_app(api_settings, max_upload_bytes=1_000_000).test_client()
    headers = TUS | alice.headers | {"Upload-Length": "1000001"}
    assert_error(client.post("/uploads", headers=headers), 413, "payload_too_large")
    assert client.post("/uploads", headers=headers | {"Upload-Length": "1000000"}).status_code == 201


def test_uploads_in_progress_are_capped_per_user(tus_client, alice, bob):
    ids = [_create(tus_client, alice, 1000) for _ in range(3)]
    response = tus_client.post("/uploads", headers=TUS | alice.headers | {"Upload-Length": "1000"})
    assert_error(response, 429, "too_many_uploads")
    assert response.headers["Retry-After"]
    _create(tus_client, bob, 1000)  # another user has a cap of their own
    assert tus_client.delete(f"/uploads/{ids[0]}", headers=TUS | alice.headers).status_code == 204
    _create(tus_client, alice, 1000)


def test_delete_ends_the_upload(tus_client, alice, content, api_settings):
    upload_id, _ = _partial(tus_client, alice, content)
    assert tus_client.delete(f"/uploads/{upload_id}", headers=TUS | alice.headers).status_code == 204
    assert tus_client.head(f"/uploads/{upload_id}", headers=TUS | alice.headers).status_code == 404
    assert_error(_patch(tus_client, alice, upload_id, 300_000, b"x"), 404, "upload_not_found")
    # A complete one: its object goes too.
    done = _upload(tus_client, alice, content, [])
    assert tus_client.delete(f"/uploads/{done}", headers=TUS | alice.headers).status_code == 204
    assert object_names(api_settings.uploads_bucket, f"uploads/{done}/") == []


def test_submitting_needs_a_complete_video_upload_of_the_caller(tus_client, alice, content):
    upload_id, _ = _partial(tus_client, alice, content)
    assert_error(
        tus_client.post("/tasks", json={"upload": upload_id}, headers=alice.headers), 409, "upload_incomplete"
    )
    assert_error(tus_client.post("/tasks", json={"upload": str(uuid.uuid4())}, headers=alice.headers), 404)
    assert_error(tus_client.post("/tasks", json={"upload": "not-an-id"}, headers=alice.headers), 404)
    assert_error(
        tus_client.post(
            "/tasks", json={"upload": upload_id, "url": "https://x.example/a.mp4"}, headers=alice.headers
        ),
        422,
    )
    noise = _upload(tus_client, alice, os.urandom(QUANTUM + 3), [])
    assert_error(tus_client.post("/tasks", json={"upload": noise}, headers=alice.headers), 415, "not_a_video")
    assert tus_client.get("/tasks", headers=alice.headers).get_json()["tasks"] == []


def test_an_expired_upload_is_gone_and_one_sweep_leaves_nothing(
    tus_app, tus_client, alice, content, api_settings
):
    partial, _ = _partial(tus_client, alice, content)
    complete = _upload(tus_client, alice, content, [])
    kept = _create(tus_client, alice, 1000)
    for upload_id in (partial, complete):
        expire_uploads(tus_app.extensions["engine"], upload_id)
        assert tus_client.head(f"/uploads/{upload_id}", headers=TUS | alice.headers).status_code == 404
        assert_error(_patch(tus_client, alice, upload_id, 0, b"x"), 404, "upload_not_found")
    assert_error(tus_client.post("/tasks", json={"upload": complete}, headers=alice.headers), 404)

    assert sweep_expired(tus_app.extensions["engine"], tus_app.extensions["storage"]) == 2
    with tus_app.extensions["engine"].connect() as conn:
        left = conn.execute(select(tus_uploads.c.id)).scalars().all()
    assert [str(i) for i in left] == [kept]
    assert object_names(api_settings.uploads_bucket, "uploads/") == []
    assert sweep_expired(tus_app.extensions["engine"], tus_app.extensions["storage"]) == 0


def test_a_short_expiry_setting_shows_in_upload_expires(make_app, api_settings, alice):
    from werkzeug.http import parse_date

    client = make_app(api_settings, tus_upload_expiry_hours=0.5).test_client()
    response = client.post("/uploads", headers=TUS | alice.headers | {"Upload-Length": "10"})
    expires = parse_date(response.headers["Upload-Expires"])
    with client.application.extensions["engine"].connect() as conn:
        now = conn.execute(select(func.now())).scalar_one()
    assert 25 * 60 < (expires - now).total_seconds() <= 30 * 60


class _HeldBody(io.RawIOBase):
    """A request body that stops after its first part until ``release`` is set."""

    def __init__(self, data: bytes, first: int) -> None:
        self.data, self.first, self.position = data, first, 0
        self.reading = threading.Event()
        self.release = threading.Event()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True  # the test client measures the body before it reads it

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = len(self.data) + offset if whence == io.SEEK_END else offset
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        if self.position >= self.first:
            self.reading.set()
            assert self.release.wait(60)
        end = min(len(self.data), self.position + len(buffer))
        if self.position < self.first:
            end = min(end, self.first)
        buffer[: end - self.position] = self.data[self.position : end]
        count = end - self.position
        self.position = end
        return count


def test_two_patches_raced_at_one_offset_one_wins_the_other_gets_409(tus_app, alice, content, api_settings):
    upload_id, offset = _partial(tus_app.test_client(), alice, content)
    rest = content[offset:]
    held = _HeldBody(rest, first=100_000)
    answers = {}

    def first_patch():
        answers["first"] = tus_app.test_client().patch(
            f"/uploads/{upload_id}",
            input_stream=held,
            headers=alice.headers | patch_headers(offset),
        )

    thread = threading.Thread(target=first_patch)
    thread.start()
    assert held.reading.wait(30)  # the first PATCH holds the upload and streams
    second = _patch(tus_app.test_client(), alice, upload_id, offset, os.urandom(len(rest)))
    assert_error(second, 409, "upload_locked")
    held.release.set()
    thread.join(60)
    assert answers["first"].status_code == 204, answers["first"].get_data(as_text=True)
    assert _stored(api_settings, upload_id) == content


def test_cors_allows_the_platforms_origin_and_exposes_the_tus_headers(make_app, api_settings, alice):
    client = make_app(api_settings, tus_cors_origins="https://app.league.example").test_client()
    preflight = client.options(
        "/uploads",
        headers={"Origin": "https://app.league.example", "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.league.example"
    assert "Upload-Metadata" in preflight.headers["Access-Control-Allow-Headers"]
    created = client.post(
        "/uploads",
        headers=TUS | alice.headers | {"Upload-Length": "10", "Origin": "https://app.league.example"},
    )
    exposed = {h.strip() for h in created.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"Location", "Upload-Offset", "Upload-Expires", "Tus-Resumable"} <= exposed
    foreign = client.options("/uploads", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in foreign.headers
