"""GET /tasks, GET /tasks/<id>, downloads and DELETE: owner scoping at every step."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, update

from services.api import routes
from services.api import tasks as task_store
from shared.storage import storage_client
from shared.tables import outbox, tasks
from tests.support.api import (
    SOURCE,
    assert_error,
    insert_tasks,
    multipart,
    object_names,
    pull_events,
    store_processed,
)
from tests.support.db import count_rows, history, task_row

# --- list ----------------------------------------------------------------------------------


def test_the_list_holds_only_the_callers_tasks_newest_first_by_default(client, engine, alice, bob):
    mine = insert_tasks(engine, alice.id, 3)
    insert_tasks(engine, bob.id, 2)
    insert_tasks(engine, alice.id, 1, deleted=True)

    body = client.get("/tasks", headers=alice.headers).get_json()
    assert [item["id"] for item in body["tasks"]] == [str(i) for i in reversed(mine)]
    assert body["max"] == 20 and body["order"] == 1
    item = body["tasks"][0]
    assert set(item) == {"id", "status", "progress", "created_at", "updated_at", "links"}
    assert item["links"] == {"self": f"/tasks/{mine[-1]}"}
    assert item["created_at"] == "2026-01-01T00:00:02+00:00"


def test_max_and_order_choose_the_page(client, engine, alice):
    ids = [str(i) for i in insert_tasks(engine, alice.id, 6)]
    newest = client.get("/tasks?max=4&order=1", headers=alice.headers).get_json()["tasks"]
    oldest = client.get("/tasks?max=4&order=0", headers=alice.headers).get_json()["tasks"]
    assert [t["id"] for t in newest] == ids[::-1][:4]
    assert [t["id"] for t in oldest] == ids[:4]


def test_max_defaults_to_20_and_is_capped_at_100(client, engine, alice):
    insert_tasks(engine, alice.id, 105)
    assert len(client.get("/tasks", headers=alice.headers).get_json()["tasks"]) == 20
    capped = client.get("/tasks?max=1000", headers=alice.headers).get_json()
    assert len(capped["tasks"]) == 100 and capped["max"] == 100
    huge = client.get("/tasks?max=" + "9" * 40, headers=alice.headers).get_json()
    assert huge["max"] == 100


@pytest.mark.parametrize(
    "query",
    [
        "max=0",
        "max=-1",
        "max=abc",
        "max=1.5",
        "max=",
        "max=%201",
        "order=2",
        "order=-1",
        "order=asc",
        "order=",
        "limit=5",
        "sort=desc",
    ],
)
def test_invalid_max_or_order_get_400(client, alice, query):
    assert_error(client.get(f"/tasks?{query}", headers=alice.headers), 400, "invalid_parameter")


# --- get and download ------------------------------------------------------------------------


def test_a_processed_task_shows_its_clips_with_download_links(client, engine, alice, api_settings):
    [task_id] = insert_tasks(engine, alice.id, 1)
    clips = [b"first clip bytes" * 1000, b"second clip"]
    store_processed(engine, api_settings, task_id, clips)

    body = client.get(f"/tasks/{task_id}", headers=alice.headers).get_json()
    assert body["status"] == "processed" and body["progress"] == 100 and body["attempts"] == 1
    assert body["failure_reason"] is None
    assert [c["index"] for c in body["clips"]] == [0, 1]
    assert body["clips"][0] == {
        "index": 0,
        "format": "16:9",
        "duration_seconds": 22.0,
        "size_bytes": len(clips[0]),
        "links": {"download": f"/tasks/{task_id}/clips/0"},
    }
    assert "original" not in body["links"]  # a URL source has no stored original

    for index, content in enumerate(clips):
        download = client.get(body["clips"][index]["links"]["download"], headers=alice.headers)
        assert download.status_code == 200 and download.data == content
        assert download.mimetype == "video/mp4"
        assert download.headers["Content-Length"] == str(len(content))
        assert download.headers["Content-Disposition"] == (
            f'attachment; filename="{task_id}-clip-{index}.mp4"'
        )
    assert_error(client.get(f"/tasks/{task_id}/clips/7", headers=alice.headers), 404, "clip_not_found")
    assert_error(client.get(f"/tasks/{task_id}/clips/x", headers=alice.headers), 404, "clip_not_found")
    assert_error(client.get(f"/tasks/{task_id}/original", headers=alice.headers), 404, "file_not_found")


def test_a_failed_task_shows_its_reason(client, engine, alice):
    [task_id] = insert_tasks(engine, alice.id, 1)
    with engine.begin() as conn:
        conn.execute(
            update(tasks)
            .where(tasks.c.id == task_id)
            .values(status="failed", attempt=3, failure_reason="source has no video stream")
        )
    body = client.get(f"/tasks/{task_id}", headers=alice.headers).get_json()
    assert (body["status"], body["attempts"], body["failure_reason"]) == (
        "failed",
        3,
        "source has no video stream",
    )


def test_another_users_task_is_answered_exactly_like_a_missing_one(client, engine, alice, bob, api_settings):
    [task_id] = insert_tasks(engine, alice.id, 1)
    store_processed(engine, api_settings, task_id, [b"clip"])
    missing = uuid.uuid4()

    for path in ("", "/clips/0", "/original"):
        theirs = client.get(f"/tasks/{task_id}{path}", headers=bob.headers)
        absent = client.get(f"/tasks/{missing}{path}", headers=bob.headers)
        malformed = client.get(f"/tasks/not-a-task-id{path}", headers=bob.headers)
        assert_error(theirs, 404, "task_not_found")
        assert theirs.get_json() == absent.get_json() == malformed.get_json()
    theirs = client.delete(f"/tasks/{task_id}", headers=bob.headers)
    absent = client.delete(f"/tasks/{missing}", headers=bob.headers)
    assert_error(theirs, 404, "task_not_found")
    assert theirs.get_json() == absent.get_json()
    assert client.get("/tasks", headers=bob.headers).get_json()["tasks"] == []

    # Nothing bob did touched alice's task.
    body = client.get(f"/tasks/{task_id}", headers=alice.headers).get_json()
    assert body["status"] == "processed" and len(body["clips"]) == 1
    assert object_names(api_settings.clips_bucket, f"tasks/{task_id}/") != []


# --- delete ----------------------------------------------------------------------------------


def test_deleting_a_queued_task_cancels_it_and_removes_its_objects(
    client, engine, alice, api_settings, video_bytes
):
    body, content_type = multipart(("file", "run.mp4", video_bytes))
    created = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers)
    task_id = uuid.UUID(created.get_json()["id"])
    # A worker had already written a clip when the athlete changed their mind.
    storage_client().bucket(api_settings.clips_bucket).blob(
        f"tasks/{task_id}/part-00.mp4"
    ).upload_from_string(b"partial clip")

    response = client.delete(f"/tasks/{task_id}", headers=alice.headers)

    assert response.status_code == 204 and response.data == b""
    row = task_row(engine, task_id)
    assert row["status"] == "canceled" and row["deleted_at"] is not None
    assert [line.status for line in history(engine, task_id)] == ["queued", "canceled"]
    [event] = pull_events(api_settings, api_settings.subscription_notifier, task_id=task_id)
    assert event.event_type == "TaskStatusChanged" and event.status == "canceled"
    assert object_names(api_settings.uploads_bucket, f"uploads/{task_id}/") == []
    assert object_names(api_settings.clips_bucket, f"tasks/{task_id}/") == []

    assert_error(client.get(f"/tasks/{task_id}", headers=alice.headers), 404, "task_not_found")
    assert client.get("/tasks", headers=alice.headers).get_json()["tasks"] == []
    again = client.delete(f"/tasks/{task_id}", headers=alice.headers)
    assert again.status_code == 204
    assert pull_events(api_settings, api_settings.subscription_notifier, task_id=task_id, timeout=2) == []


def test_deleting_a_processed_task_keeps_its_status_and_publishes_nothing(
    client, engine, alice, api_settings
):
    [task_id] = insert_tasks(engine, alice.id, 1)
    store_processed(engine, api_settings, task_id, [b"clip"])

    assert client.delete(f"/tasks/{task_id}", headers=alice.headers).status_code == 204

    row = task_row(engine, task_id)
    assert row["status"] == "processed" and row["deleted_at"] is not None
    assert count_rows(engine, outbox) == 0
    assert object_names(api_settings.clips_bucket, f"tasks/{task_id}/") == []


def test_an_idempotency_key_of_a_deleted_task_gets_409(client, alice):
    headers = alice.headers | {"Idempotency-Key": "run-42"}
    first = client.post("/tasks", json={"url": SOURCE}, headers=headers)
    client.delete(first.headers["Location"], headers=alice.headers)
    assert_error(client.post("/tasks", json={"url": SOURCE}, headers=headers), 409, "idempotency_key_used")


@pytest.mark.parametrize("deletion", ["by its owner", "row removed"])
def test_a_task_deleted_between_the_key_lookup_and_the_replay_gets_409(
    client, engine, alice, api_settings, monkeypatch, deletion
):
    headers = alice.headers | {"Idempotency-Key": "run-44"}
    first = client.post("/tasks", json={"url": SOURCE}, headers=headers)
    task_id = uuid.UUID(first.get_json()["id"])
    look_up = routes.task_store.find_by_idempotency_key

    def then_delete(conn, owner_id, key, window_hours):
        found = look_up(conn, owner_id, key, window_hours)
        # The race, made certain: the task goes right after the lookup found it.
        with engine.begin() as other:
            if deletion == "by its owner":
                task_store.delete(other, task_id, alice.id, api_settings)
            else:
                other.execute(delete(tasks).where(tasks.c.id == task_id))
        return found

    monkeypatch.setattr(routes.task_store, "find_by_idempotency_key", then_delete)
    replay = client.post("/tasks", json={"url": SOURCE}, headers=headers)
    assert_error(replay, 409, "idempotency_key_used")


def test_idempotency_keys_expire_after_the_window(client, engine, alice):
    headers = alice.headers | {"Idempotency-Key": "run-43"}
    first = client.post("/tasks", json={"url": SOURCE}, headers=headers)
    same = client.post("/tasks", json={"url": SOURCE}, headers=headers)
    changed = client.post("/tasks", json={"url": SOURCE + "?v=2"}, headers=headers)
    assert first.status_code == 202 and same.status_code == 200
    assert same.get_json()["id"] == first.get_json()["id"]
    assert same.headers["Location"] == first.headers["Location"]
    assert_error(changed, 422, "idempotency_key_mismatch")

    with engine.begin() as conn:
        conn.execute(update(tasks).values(created_at=func.now() - timedelta(hours=25)))
    later = client.post("/tasks", json={"url": SOURCE}, headers=headers)
    assert later.status_code == 202 and later.get_json()["id"] != first.get_json()["id"]
    assert count_rows(engine, tasks) == 2


def test_the_same_key_from_two_users_makes_two_tasks(client, alice, bob):
    first = client.post("/tasks", json={"url": SOURCE}, headers=alice.headers | {"Idempotency-Key": "k"})
    second = client.post("/tasks", json={"url": SOURCE}, headers=bob.headers | {"Idempotency-Key": "k"})
    assert first.status_code == second.status_code == 202
    assert first.get_json()["id"] != second.get_json()["id"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "caf\u00e9"])
def test_a_malformed_idempotency_key_gets_400(client, alice, key):
    response = client.post(
        "/tasks",
        json={"url": SOURCE},
        headers=alice.headers | {"Idempotency-Key": key.encode().decode("latin-1")},
    )
    assert_error(response, 400, "invalid_idempotency_key")


# --- dependencies down -------------------------------------------------------------------------


def test_a_database_that_does_not_answer_gets_503(make_app, api_settings, alice):
    client = make_app(
        api_settings, database_url="postgresql+pg8000://idrl:idrl@127.0.0.1:9/idrl", db_pool_timeout_seconds=1
    ).test_client()
    assert_error(client.get("/tasks", headers=alice.headers), 503, "unavailable")
    assert_error(client.post("/tasks", json={"url": SOURCE}, headers=alice.headers), 503, "unavailable")
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"]["database"] == "unavailable"


def test_storage_that_does_not_answer_gets_503_and_no_task(
    make_app, api_settings, engine, alice, video_bytes
):
    client = make_app(api_settings, uploads_bucket=f"idrl-missing-{uuid.uuid4().hex[:8]}").test_client()
    body, content_type = multipart(("file", "run.mp4", video_bytes))
    response = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers)
    assert_error(response, 503, "unavailable")
    assert count_rows(engine, tasks) == 0
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["checks"] == {
        "database": "ok",
        "storage": "unavailable",
    }
