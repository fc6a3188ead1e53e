"""The api through the nginx gateway, as a client sees it: every endpoint, every status
code of the contract's table, and owner scoping (user B can neither see, get, download
nor delete user A's task)."""

from __future__ import annotations

import collections
import concurrent.futures
import http.client
import os
import threading
import uuid
from urllib.parse import urlsplit

import pytest
import requests
import sqlalchemy

from tests.support.api import insert_tasks, multipart, store_processed
from tests.support.client import PASSWORD, PlatformClient, assert_error
from tests.support.clock import start_early_in_a_minute

TIMEOUT = 30


@pytest.fixture
def athlete(local_stack) -> PlatformClient:
    return PlatformClient.sign_up(local_stack.base_url)


@pytest.fixture
def rival(local_stack) -> PlatformClient:
    return PlatformClient.sign_up(local_stack.base_url)


@pytest.fixture
def stack_engine(local_stack):
    engine = sqlalchemy.create_engine(local_stack.settings.database_url)
    yield engine
    engine.dispose()


def test_the_readme_flow_submit_list_get_delete(local_stack, athlete):
    base = local_stack.base_url
    submitted = requests.post(
        f"{base}/tasks",
        json={"url": "http://127.0.0.1:8000/run.mp4"},
        headers=athlete.headers,
        timeout=TIMEOUT,
    )
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["id"]
    assert submitted.headers["Location"] == f"/tasks/{task_id}"

    listed = requests.get(f"{base}/tasks?max=4&order=1", headers=athlete.headers, timeout=TIMEOUT)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json()["tasks"]] == [task_id]

    one = requests.get(f"{base}/tasks/{task_id}", headers=athlete.headers, timeout=TIMEOUT)
    assert one.status_code == 200
    assert one.json()["source"] == {"kind": "url", "url": "http://127.0.0.1:8000/run.mp4"}

    deleted = requests.delete(f"{base}/tasks/{task_id}", headers=athlete.headers, timeout=TIMEOUT)
    assert deleted.status_code == 204
    assert_error(
        requests.get(f"{base}/tasks/{task_id}", headers=athlete.headers, timeout=TIMEOUT),
        404,
        "task_not_found",
    )
    assert (
        requests.delete(f"{base}/tasks/{task_id}", headers=athlete.headers, timeout=TIMEOUT).status_code
        == 204
    )


def test_an_upload_streams_through_the_gateway_and_downloads_back(local_stack, athlete, video_bytes):
    base = local_stack.base_url
    # A body nginx passes on as it arrives (no Content-Length: chunked transfer encoding).
    content = video_bytes + os.urandom(3 * 1024 * 1024)
    body, content_type = multipart(("file", "run.mp4", content))
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    response = requests.post(
        f"{base}/tasks",
        data=chunks,
        timeout=TIMEOUT,
        headers=athlete.headers | {"Content-Type": content_type},
    )
    assert response.status_code == 202, response.text
    task = response.json()
    assert task["source"] == {"kind": "upload", "filename": "run.mp4"}
    original = requests.get(f"{base}{task['links']['original']}", headers=athlete.headers, timeout=TIMEOUT)
    assert original.status_code == 200 and original.content == content


def test_a_declared_length_past_the_limit_is_refused_before_the_body_is_sent(local_stack, athlete):
    gateway = urlsplit(local_stack.base_url)
    connection = http.client.HTTPConnection(gateway.hostname, gateway.port, timeout=TIMEOUT)
    try:
        connection.putrequest("POST", "/tasks")
        connection.putheader("Authorization", athlete.headers["Authorization"])
        connection.putheader("Content-Type", "multipart/form-data; boundary=b")
        connection.putheader("Content-Length", str(550 * 1024 * 1024))
        connection.endheaders()
        response = connection.getresponse()
        status, content_type, payload = response.status, response.getheader("Content-Type"), response.read()
    finally:
        connection.close()
    assert status == 413 and content_type.startswith("application/json")
    assert b'"payload_too_large"' in payload


@pytest.mark.parametrize(
    ("path", "content_type", "body"),
    [
        ("/tasks", "application/json", b'{"source_url": "http://127.0.0.1:9/run.mp4"}'),
        ("/auth/login", "text/plain", b"athlete@example.com"),
    ],
)
def test_an_answer_given_before_the_body_arrived_keeps_the_connection_usable(
    local_stack, path, content_type, body
):
    """A 4xx decided before the body came (no token; a body of the wrong type): the
    connection the answer kept alive still serves the client's next request."""
    gateway = urlsplit(local_stack.base_url)
    connection = http.client.HTTPConnection(gateway.hostname, gateway.port, timeout=TIMEOUT)
    try:
        connection.putrequest("POST", path)
        connection.putheader("Content-Type", content_type)
        connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        # The gateway has passed the headers on, and the service may answer, before this.
        threading.Event().wait(0.3)
        connection.send(body)
        first = connection.getresponse()
        first_status, first_connection = first.status, first.getheader("Connection")
        first.read()
        connection.request("GET", "/tasks")
        second = connection.getresponse()
        second_status, second_payload = second.status, second.read()
    finally:
        connection.close()
    assert 400 <= first_status < 500 and first_connection == "keep-alive"
    assert second_status == 401 and b'"missing_token"' in second_payload


def test_every_status_code_of_the_table_through_the_gateway(local_stack, athlete, video_bytes):
    base = local_stack.base_url
    auth = athlete.headers

    def post(**kwargs):
        return requests.post(f"{base}/tasks", timeout=TIMEOUT, **kwargs)

    assert_error(requests.get(f"{base}/tasks?max=0", headers=auth, timeout=TIMEOUT), 400, "invalid_parameter")
    assert_error(
        post(data="{broken", headers=auth | {"Content-Type": "application/json"}), 400, "invalid_json"
    )
    assert_error(requests.get(f"{base}/tasks", timeout=TIMEOUT), 401, "missing_token")
    assert_error(
        requests.get(f"{base}/tasks", headers={"Authorization": "Bearer x.y.z"}, timeout=TIMEOUT), 401
    )
    assert_error(
        requests.get(f"{base}/tasks/{uuid.uuid4()}", headers=auth, timeout=TIMEOUT), 404, "task_not_found"
    )
    assert_error(
        post(data=b"hello", headers=auth | {"Content-Type": "text/plain"}), 415, "unsupported_media_type"
    )
    body, content_type = multipart(("file", "notes.mp4", b"just some text, not a video"))
    assert_error(post(data=body, headers=auth | {"Content-Type": content_type}), 415, "not_a_video")
    assert_error(
        post(json={"url": "http://169.254.169.254/latest/meta-data/"}, headers=auth),
        422,
        "source_url_rejected",
    )
    assert_error(
        post(json={"url": "https://a.example/x.mp4", "status": "processed"}, headers=auth),
        422,
        "invalid_field",
    )

    keyed = auth | {"Idempotency-Key": f"gateway-{uuid.uuid4().hex}"}
    first = post(json={"url": "https://a.example/x.mp4"}, headers=keyed)
    assert first.status_code == 202
    again = post(json={"url": "https://a.example/x.mp4"}, headers=keyed)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert_error(
        post(json={"url": "https://a.example/y.mp4"}, headers=keyed), 422, "idempotency_key_mismatch"
    )
    assert (
        requests.delete(f"{base}{first.headers['Location']}", headers=auth, timeout=TIMEOUT).status_code
        == 204
    )
    assert_error(post(json={"url": "https://a.example/x.mp4"}, headers=keyed), 409, "idempotency_key_used")

    assert_error(
        post(data="{}" + " " * 70_000, headers=auth | {"Content-Type": "application/json"}),
        413,
        "payload_too_large",
    )

    # The per-user limit (30 a minute on the local stack): cheap refused requests count too.
    # It counts in fixed minutes: the 32 requests below all fall in one.
    start_early_in_a_minute()
    statuses = [post(data=b"x", headers=auth | {"Content-Type": "text/plain"}).status_code for _ in range(31)]
    assert statuses[-1] == 429 and set(statuses) <= {415, 429}
    limited = post(json={"url": "https://a.example/x.mp4"}, headers=auth)
    assert_error(limited, 429, "rate_limited")
    assert int(limited.headers["Retry-After"]) >= 1

    assert requests.get(f"{base}/healthz", timeout=TIMEOUT).json() == {"status": "ok"}
    ready = requests.get(f"{base}/readyz", timeout=TIMEOUT).json()
    assert ready == {"status": "ok", "checks": {"database": "ok", "storage": "ok"}}


def test_user_b_can_neither_see_get_download_nor_delete_user_as_task(
    local_stack, athlete, rival, stack_engine
):
    base = local_stack.base_url
    # A processed task of the athlete's, written as the pipeline leaves it: a task
    # submitted through the api would reach the stack's worker, whose outcome would race
    # these reads.
    [task_uuid] = insert_tasks(stack_engine, uuid.UUID(athlete.id), 1)
    store_processed(stack_engine, local_stack.settings, task_uuid, [b"clip bytes"])
    task_id = str(task_uuid)

    missing = f"{base}/tasks/{uuid.uuid4()}"
    for suffix in ("", "/clips/0"):
        theirs = requests.get(f"{base}/tasks/{task_id}{suffix}", headers=rival.headers, timeout=TIMEOUT)
        assert (
            assert_error(theirs, 404, "task_not_found")
            == requests.get(f"{missing}{suffix}", headers=rival.headers, timeout=TIMEOUT).json()
        )
    assert (
        assert_error(requests.delete(f"{base}/tasks/{task_id}", headers=rival.headers, timeout=TIMEOUT), 404)
        == requests.delete(missing, headers=rival.headers, timeout=TIMEOUT).json()
    )
    listed = requests.get(f"{base}/tasks?max=100", headers=rival.headers, timeout=TIMEOUT).json()
    assert task_id not in [t["id"] for t in listed["tasks"]]

    # The owner still has all of it.
    clip = requests.get(f"{base}/tasks/{task_id}/clips/0", headers=athlete.headers, timeout=TIMEOUT)
    assert clip.status_code == 200 and clip.content == b"clip bytes"
    assert (
        requests.get(f"{base}/tasks/{task_id}", headers=athlete.headers, timeout=TIMEOUT).json()["status"]
        == "processed"
    )


# --- a burst through the gateway --------------------------------------------------------

BURST_REQUESTS = 2000
BURST_CONCURRENCY = 32


def _burst_request(base: str, session: requests.Session, athletes: list[PlatformClient], index: int):
    """One request of the burst's mix: reads, submits, logins and bad input."""
    athlete = athletes[index % len(athletes)]
    auth = athlete.headers
    kind = index % 20
    if kind < 8:
        return session.get(f"{base}/tasks?max=5&order=1", headers=auth, timeout=60)
    if kind == 8:
        return session.get(f"{base}/tasks/{uuid.uuid4()}", headers=auth, timeout=60)
    if kind == 9:
        return session.get(f"{base}/healthz", timeout=60)
    if kind < 13:
        # Refused loopback port: the task fails fast; past the per-user limit, 429.
        return session.post(
            f"{base}/tasks", json={"url": "http://127.0.0.1:9/run.mp4"}, headers=auth, timeout=60
        )
    if kind == 13:
        return session.post(
            f"{base}/tasks", data="{broken", headers=auth | {"Content-Type": "application/json"}, timeout=60
        )
    if kind == 14:
        return session.post(
            f"{base}/tasks", data=b"x", headers=auth | {"Content-Type": "text/plain"}, timeout=60
        )
    if kind == 15:
        return session.get(f"{base}/tasks", headers={"Authorization": "Bearer x.y.z"}, timeout=60)
    if kind == 16:
        return session.post(
            f"{base}/tasks",
            data="{}" + " " * 70_000,
            headers=auth | {"Content-Type": "application/json"},
            timeout=60,
        )
    if kind == 17 and index % 60 == 17:
        # A login costs a memory-hard hash: one in sixty requests.
        return session.post(
            f"{base}/auth/login", json={"email": athlete.email, "password": PASSWORD}, timeout=60
        )
    if kind == 17:
        return session.post(f"{base}/auth/login", json={"email": "x"}, timeout=60)
    if kind == 18:
        # A fresh connection each time, as a client without keep-alive.
        return requests.get(f"{base}/tasks?max=1", headers=auth, timeout=60)
    return session.delete(f"{base}/tasks/{uuid.uuid4()}", headers=auth, timeout=60)


def test_a_burst_of_mixed_requests_through_the_gateway_gets_no_5xx(local_stack):
    base = local_stack.base_url
    athletes = [PlatformClient.sign_up(base) for _ in range(8)]
    sessions = threading.local()

    def one(index: int) -> tuple[int, str]:
        if not hasattr(sessions, "session"):
            sessions.session = requests.Session()
        response = _burst_request(base, sessions.session, athletes, index)
        return response.status_code, response.text[:200]

    try:
        with concurrent.futures.ThreadPoolExecutor(BURST_CONCURRENCY) as pool:
            answers = list(pool.map(one, range(BURST_REQUESTS)))
        statuses = collections.Counter(status for status, _ in answers)
        server_errors = [(status, text) for status, text in answers if status >= 500]
        assert not server_errors, f"{len(server_errors)} answers of 5xx ({statuses}): {server_errors[:5]}"
        assert sum(statuses.values()) == BURST_REQUESTS
        assert statuses[200] and statuses[202] and statuses[404] and statuses[401]
    finally:
        # The accepted tasks fetch from a refused port, a transient failure the shared
        # stack's worker would retry for minutes ahead of every later test: cancel them
        # all, also when the burst failed.
        for athlete in athletes:
            for task in athlete.get("/tasks?max=100").json()["tasks"]:
                assert athlete.delete(f"/tasks/{task['id']}").status_code == 204
