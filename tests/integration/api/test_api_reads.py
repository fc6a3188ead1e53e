"""What a read costs and what a download may serve: no signature per clip on a read,
one per download; a per-user read limit; only the task's own objects are served."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import storage as gcs
from google.oauth2 import service_account
from sqlalchemy import insert, update

from shared import layout, storage
from shared.tables import clips, tasks
from tests.support.api import SOURCE, assert_error, insert_tasks, multipart, store_processed

# A 30-minute source gives 90 clips of 20 s.
MANY_CLIPS = 90


@pytest.fixture(scope="module")
def service_account_credentials() -> service_account.Credentials:
    """A service account with a private key: signing is local, like a key file's."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "idrl-test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "api@idrl-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


@pytest.fixture
def signatures(monkeypatch, service_account_credentials, storage_emulator_host) -> list[str]:
    """The object names of every V4 signature the process makes, in order.

    The emulator client cannot sign (anonymous credentials): here the app's client signs
    with a service account key, as the api does on Google Cloud, while its requests still go to the
    emulator. Each signature counted here would be one IAM ``signBlob`` call on Compute
    Engine.
    """
    create_client = storage.create_client

    def signing_client() -> gcs.Client:
        client = create_client()
        # Its requests keep the emulator's anonymous session, made before the swap.
        assert client._http is not None
        client._credentials = service_account_credentials
        return client

    # The app factory makes the app's client: from here on, one that can sign.
    monkeypatch.setattr(storage, "create_client", signing_client)
    made: list[str] = []
    sign = gcs.Blob.generate_signed_url

    def counted(blob, *args, **kwargs):
        made.append(blob.name)
        return sign(blob, *args, **kwargs)

    monkeypatch.setattr(gcs.Blob, "generate_signed_url", counted)
    return made


def _with_many_clips(engine, settings, owner_id: uuid.UUID) -> uuid.UUID:
    [task_id] = insert_tasks(engine, owner_id, 1, source_kind="upload")
    with engine.begin() as conn:
        conn.execute(
            update(tasks).where(tasks.c.id == task_id).values(status="processed", progress=100, attempt=1)
        )
        conn.execute(
            insert(clips),
            [
                {
                    "task_id": task_id,
                    "index": index,
                    "uri": f"gs://{settings.clips_bucket}/{layout.clip_object(task_id, index)}",
                    "duration_seconds": 22.0,
                    "size_bytes": 1000,
                }
                for index in range(1, MANY_CLIPS + 1)
            ],
        )
    return task_id


# --- the cost of a read ------------------------------------------------------------------------


def test_reading_a_task_of_90_clips_signs_nothing_with_signed_urls_on(
    make_app, api_settings, alice, signatures
):
    app = make_app(api_settings, signed_urls=True)
    client = app.test_client()
    task_id = _with_many_clips(app.extensions["engine"], api_settings, alice.id)

    response = client.get(f"/tasks/{task_id}", headers=alice.headers)

    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert len(body["clips"]) == MANY_CLIPS
    assert [clip["links"]["download"] for clip in body["clips"]] == [
        f"/tasks/{task_id}/clips/{index}" for index in range(1, MANY_CLIPS + 1)
    ]
    assert body["links"]["original"] == f"/tasks/{task_id}/original"
    assert signatures == []


def test_with_signed_urls_on_a_download_redirects_to_a_url_signed_for_that_file(
    make_app, api_settings, alice, signatures
):
    app = make_app(api_settings, signed_urls=True, signed_url_minutes=7)
    client = app.test_client()
    [task_id] = insert_tasks(app.extensions["engine"], alice.id, 1)
    content = b"the second clip" * 100
    store_processed(app.extensions["engine"], api_settings, task_id, [b"first", content])

    response = client.get(f"/tasks/{task_id}/clips/1", headers=alice.headers)

    assert response.status_code == 302
    assert response.headers["Cache-Control"] == "private, no-store"
    name = layout.clip_object(task_id, 1)
    assert signatures == [name]
    location = urlsplit(response.headers["Location"])
    query = parse_qs(location.query)
    assert location.path.endswith(f"/{api_settings.clips_bucket}/{name}")
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["420"]
    assert query["X-Goog-Credential"][0].startswith("api@idrl-test.iam.gserviceaccount.com/")
    # The signed URL aims at the storage endpoint in use (here the emulator), which serves the file.
    fetched = requests.get(response.headers["Location"], timeout=30)
    assert fetched.status_code == 200 and fetched.content == content


def test_without_signed_urls_downloads_stream_and_sign_nothing(
    client, engine, alice, api_settings, signatures
):
    [task_id] = insert_tasks(engine, alice.id, 1)
    store_processed(engine, api_settings, task_id, [b"a clip"])
    body = client.get(f"/tasks/{task_id}", headers=alice.headers).get_json()
    download = client.get(body["clips"][0]["links"]["download"], headers=alice.headers)
    assert download.status_code == 200 and download.data == b"a clip"
    assert signatures == []


# --- the read limit ------------------------------------------------------------------------------


def _reads_until_refused(client, user, paths: list[str], most: int):
    """Read ``paths`` round and round until a 429; how many were answered before it, and it."""
    for n in range(most):
        response = client.get(paths[n % len(paths)], headers=user.headers)
        if response.status_code == 429:
            return n, response
        assert response.status_code in (200, 404), response.get_data(as_text=True)
    return most, None


def test_reads_past_the_per_user_limit_get_429_with_retry_after(make_app, api_settings, alice, bob):
    limit = 5
    app = make_app(api_settings, reads_per_minute_per_user=limit)
    client = app.test_client()
    [task_id] = insert_tasks(app.extensions["engine"], alice.id, 1)
    store_processed(app.extensions["engine"], api_settings, task_id, [b"clip"])
    paths = ["/tasks", f"/tasks/{task_id}", f"/tasks/{task_id}/clips/0", f"/tasks/{task_id}/original"]

    answered, refused = _reads_until_refused(client, alice, paths, most=2 * limit + 1)

    assert refused is not None, "no read was refused"
    # Fixed one-minute windows: a run that straddles a boundary gets a second allowance.
    assert limit <= answered <= 2 * limit
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Another user reads on, and submissions are counted apart from reads.
    assert client.get("/tasks", headers=bob.headers).status_code == 200
    submitted = client.post("/tasks", json={"url": SOURCE}, headers=alice.headers)
    assert submitted.status_code == 202


# --- what a download may serve ---------------------------------------------------------------------


def test_a_clip_row_naming_an_object_outside_the_tasks_folder_is_never_served(
    make_app, api_settings, alice, bob, video_bytes, signatures
):
    app = make_app(api_settings)
    client, engine = app.test_client(), app.extensions["engine"]
    # Bob's upload and another task's clip both exist in storage.
    body, content_type = multipart(("file", "bob.mp4", video_bytes))
    bobs = client.post("/tasks", data=body, content_type=content_type, headers=bob.headers).get_json()
    [other] = insert_tasks(engine, bob.id, 1)
    store_processed(engine, api_settings, other, [b"bob's clip"])
    [task_id] = insert_tasks(engine, alice.id, 1)
    foreign = [
        f"gs://{api_settings.uploads_bucket}/{layout.upload_object(bobs['id'])}",
        f"gs://{api_settings.clips_bucket}/{layout.clip_object(other, 0)}",
        f"gs://{api_settings.clips_bucket}/{layout.task_folder(task_id)}../{other}/part-00.mp4",
    ]
    with engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(status="processed"))
        conn.execute(
            insert(clips),
            [
                {"task_id": task_id, "index": index, "uri": uri, "duration_seconds": 22.0, "size_bytes": 10}
                for index, uri in enumerate(foreign)
            ],
        )

    for signed in (False, True):
        serving = make_app(api_settings, signed_urls=signed).test_client()
        for index in range(len(foreign)):
            assert_error(
                serving.get(f"/tasks/{task_id}/clips/{index}", headers=alice.headers), 404, "file_not_found"
            )
    assert signatures == []


def test_the_original_route_serves_only_the_tasks_own_upload(
    client, engine, alice, api_settings, video_bytes
):
    body, content_type = multipart(("file", "run.mp4", video_bytes))
    mine = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers).get_json()
    # A task whose source row was pointed at someone else's upload.
    [task_id] = insert_tasks(engine, alice.id, 1, source_kind="upload")
    with engine.begin() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(source=f"gs://{api_settings.uploads_bucket}/{layout.upload_object(mine['id'])}")
        )
    assert client.get(f"/tasks/{mine['id']}/original", headers=alice.headers).data == video_bytes
    assert_error(client.get(f"/tasks/{task_id}/original", headers=alice.headers), 404, "file_not_found")
