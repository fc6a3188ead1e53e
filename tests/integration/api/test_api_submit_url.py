"""POST /tasks with a JSON source URL: the task, its TaskSubmitted, and every refusal."""

from __future__ import annotations

import uuid

import pytest

from shared.tables import outbox, tasks
from tests.support.api import assert_error, pull_events
from tests.support.db import count_rows, task_row

SOURCE = "https://videos.league.example/runs/run-1.mp4"


def test_submit_by_url_queues_the_task_and_publishes_it(client, engine, alice, api_settings):
    response = client.post("/tasks", json={"url": SOURCE}, headers=alice.headers)

    assert response.status_code == 202, response.get_data(as_text=True)
    body = response.get_json()
    task_id = uuid.UUID(body["id"])
    assert response.headers["Location"] == f"/tasks/{task_id}"
    assert body["status"] == "queued" and body["progress"] == 0 and body["attempts"] == 0
    assert body["source"] == {"kind": "url", "url": SOURCE}
    assert body["clips"] == [] and body["links"] == {"self": f"/tasks/{task_id}"}
    row = task_row(engine, task_id)
    assert (row["owner_id"], row["status"], row["source"]) == (alice.id, "queued", SOURCE)
    assert count_rows(engine, outbox, outbox.c.published_at.is_(None)) == 0

    [event] = pull_events(api_settings, api_settings.subscription_transcoder, task_id=task_id)
    assert event.event_type == "TaskSubmitted"
    assert (event.owner_id, event.source) == (alice.id, SOURCE)
    assert event.spec.max_part_seconds == 20


@pytest.mark.parametrize(
    "url",
    [
        "ftp://videos.league.example/run.mp4",
        "file:///etc/passwd",
        "javascript:alert(1)",
        "http://127.0.0.1/run.mp4",
        "http://localhost:8080/run.mp4",
        "http://10.0.0.7/run.mp4",
        "http://[::1]/run.mp4",
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "https://user:secret@videos.league.example/run.mp4",
        "https://videos.league.example/" + "a" * 2100,
        "not a url",
        "",
    ],
)
def test_unsafe_or_malformed_urls_are_refused_with_422(client, engine, alice, url):
    response = client.post("/tasks", json={"url": url}, headers=alice.headers)
    assert_error(response, 422, "source_url_rejected")
    assert count_rows(engine, tasks) == 0


def test_loopback_is_accepted_only_when_the_local_stack_allows_it(make_app, api_settings, alice):
    client = make_app(api_settings, allow_loopback_sources=True).test_client()
    response = client.post("/tasks", json={"url": "http://127.0.0.1:8000/run.mp4"}, headers=alice.headers)
    assert response.status_code == 202
    metadata = client.post("/tasks", json={"url": "http://169.254.169.254/latest/"}, headers=alice.headers)
    assert_error(metadata, 422, "source_url_rejected")


@pytest.mark.parametrize("field", ["status", "owner", "owner_id", "outputs", "id", "progress"])
def test_fields_a_client_may_not_set_are_refused_and_never_stored(client, engine, alice, field):
    response = client.post("/tasks", json={"url": SOURCE, field: "processed"}, headers=alice.headers)
    body = assert_error(response, 422, "invalid_field")
    assert field in body["error"]["message"]
    assert count_rows(engine, tasks) == 0


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "[]", "content_type": "application/json"}, 400, "invalid_json"),
        ({"json": {}}, 400, "invalid_request"),
        ({"json": {"url": 42}}, 400, "invalid_request"),
        ({"json": {"url": ["https://a.example/x.mp4"]}}, 400, "invalid_request"),
        (
            {"data": "url=https://a.example/x.mp4", "content_type": "application/x-www-form-urlencoded"},
            415,
            "unsupported_media_type",
        ),
        ({"data": SOURCE, "content_type": "text/plain"}, 415, "unsupported_media_type"),
        (
            {"data": '{"url": "' + "a" * 70_000 + '"}', "content_type": "application/json"},
            413,
            "payload_too_large",
        ),
    ],
)
def test_bad_bodies_get_clear_4xx(client, engine, alice, kwargs, status, code):
    response = client.post("/tasks", headers=alice.headers, **kwargs)
    assert_error(response, status, code)
    assert count_rows(engine, tasks) == 0


def test_submissions_past_the_per_user_limit_get_429_with_retry_after(make_app, api_settings, alice, bob):
    client = make_app(api_settings, tasks_per_minute_per_user=2).test_client()
    for _ in range(2):
        assert client.post("/tasks", json={"url": SOURCE}, headers=alice.headers).status_code == 202
    refused = client.post("/tasks", json={"url": SOURCE}, headers=alice.headers)
    assert_error(refused, 429, "rate_limited")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # The limit is per user: another athlete is not slowed down.
    assert client.post("/tasks", json={"url": SOURCE}, headers=bob.headers).status_code == 202


@pytest.mark.parametrize(
    "body",
    [
        r'{"url": "https://videos.league.example/run\ud800.mp4"}',
        r'{"url": "https://videos.league.example/\u0000.mp4"}',
    ],
)
def test_text_that_cannot_be_stored_is_refused_not_a_500(client, engine, alice, body):
    # JSON allows a lone surrogate or a NUL escape; neither can be stored as text
    # (shared.web.json_body refuses them for every service).
    response = client.post("/tasks", data=body, content_type="application/json", headers=alice.headers)
    assert_error(response, 422, "invalid_text")
    assert count_rows(engine, tasks) == 0
