"""Per-user limits on work and storage: a cap on units in flight (tasks until planned, then
their parts; later ones wait, queued, and go out as earlier ones end) and a cap on stored
bytes (409 at submit)."""

from __future__ import annotations

import io
import uuid

from sqlalchemy import func, select

from services.notifier.apply import apply_status_change
from services.notifier.main import apply_event, let_out
from shared import layout
from shared.events import ClipOutput, TaskStatusChanged
from shared.lifecycle import TaskStatus
from shared.outbox import OutboxRelay, relay_once, release_held
from shared.storage import gs_uri
from shared.tables import outbox, task_parts, tasks
from tests.support.api import (
    SOURCE,
    assert_error,
    multipart,
    object_names,
    part_submitted,
    pull_events,
    store_processed,
)
from tests.support.db import count_rows


def _submit(client, user, count: int) -> list[uuid.UUID]:
    ids = []
    for n in range(count):
        response = client.post("/tasks", json={"url": f"{SOURCE}?run={n}"}, headers=user.headers)
        assert response.status_code == 202, response.get_data(as_text=True)
        assert response.get_json()["status"] == "queued"
        ids.append(uuid.UUID(response.get_json()["id"]))
    return ids


def _submitted(settings, *, want: int, timeout: float) -> list[uuid.UUID]:
    """The tasks whose TaskSubmitted reached the workers' subscription (waits for
    ``want`` of them, or ``timeout`` seconds)."""
    events = pull_events(settings, settings.subscription_transcoder, want=want, timeout=timeout)
    return [event.task_id for event in events]


def _worker_reports(engine, settings, task_id: uuid.UUID, *statuses: TaskStatus, publisher=None) -> None:
    """What a worker's events do to the task, applied by the notifier's own code (and,
    given the ``publisher``, what that made room for let out, as the notifier does)."""
    for status in statuses:
        event = TaskStatusChanged(
            task_id=task_id,
            status=status,
            attempt=1,
            progress=100 if status is TaskStatus.PROCESSED else 10,
            failure_reason="the source is not a readable video" if status is TaskStatus.FAILED else None,
            worker_id="w-1",
        )
        result = apply_status_change(engine, event, clips_bucket=settings.clips_bucket)
        assert result.change is not None
        if publisher is not None:
            let_out(engine, publisher, settings, result)


# --- tasks in flight ------------------------------------------------------------------------


def test_past_the_cap_submissions_wait_and_go_out_as_earlier_ones_end(make_app, api_settings, alice, bob):
    settings = api_settings.model_copy(
        update={"max_parts_in_flight_per_user": 2, "outbox_republish_after_seconds": 0}
    )
    app = make_app(settings)
    client, engine, publisher = app.test_client(), app.extensions["engine"], app.extensions["publisher"]

    first, second, third, fourth = _submit(client, alice, 4)

    assert sorted(_submitted(settings, want=4, timeout=4)) == sorted([first, second])
    # The relay lets nothing more out while both are in flight, and never claims a held row.
    assert release_held(engine, publisher, settings) == 0
    assert relay_once(engine, publisher, settings) == 0
    _worker_reports(engine, settings, first, TaskStatus.PROCESSING)
    assert release_held(engine, publisher, settings) == 0
    # Another user's submissions are not held behind alice's.
    [bobs] = _submit(client, bob, 1)
    assert _submitted(settings, want=2, timeout=3) == [bobs]
    held = client.get(f"/tasks/{third}", headers=alice.headers).get_json()
    assert held["status"] == "queued"

    _worker_reports(engine, settings, first, TaskStatus.PROCESSED)
    assert release_held(engine, publisher, settings) == 1
    assert _submitted(settings, want=2, timeout=3) == [third]

    _worker_reports(engine, settings, second, TaskStatus.PROCESSING, TaskStatus.FAILED)
    assert release_held(engine, publisher, settings) == 1
    assert _submitted(settings, want=2, timeout=3) == [fourth]

    assert release_held(engine, publisher, settings) == 0
    assert relay_once(engine, publisher, settings) == 0
    assert count_rows(engine, outbox, outbox.c.published_at.is_(None)) == 0


def test_the_relay_thread_publishes_held_tasks_and_never_a_deleted_one(make_app, api_settings, alice):
    settings = api_settings.model_copy(
        update={
            "max_parts_in_flight_per_user": 1,
            "outbox_relay_interval_seconds": 0.2,
            # Past the request's own publish: at 0 the relay could claim a row in the
            # moment between its commit and its mark, and publish it a second time.
            "outbox_republish_after_seconds": 2,
        }
    )
    app = make_app(settings)
    client, engine = app.test_client(), app.extensions["engine"]
    relay = OutboxRelay(engine, app.extensions["publisher"], settings)
    relay.start()
    try:
        first, deleted, last = _submit(client, alice, 3)
        assert _submitted(settings, want=3, timeout=3) == [first]
        assert client.delete(f"/tasks/{deleted}", headers=alice.headers).status_code == 204

        _worker_reports(engine, settings, first, TaskStatus.PROCESSING, TaskStatus.PROCESSED)

        # The thread lets the next held task out; the deleted one is never published.
        assert _submitted(settings, want=2, timeout=8) == [last]
    finally:
        relay.stop()
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.published_at.is_not(None).label("published")).where(
                outbox.c.attributes["task_id"].astext == str(deleted)
            )
        ).all()
    # Only its cancellation remains, on task-events: its TaskSubmitted went with it.
    assert [row.published for row in rows] == [True]


# --- stored bytes ---------------------------------------------------------------------------


def _upload(client, user, content: bytes):
    body, content_type = multipart(("file", "run.mp4", content))
    return client.post("/tasks", data=body, content_type=content_type, headers=user.headers)


def test_a_submission_past_the_storage_quota_gets_409_and_stores_nothing(
    make_app, api_settings, alice, bob, video_bytes
):
    app = make_app(api_settings, max_stored_bytes_per_user=len(video_bytes) + 100)
    client, engine = app.test_client(), app.extensions["engine"]
    first = _upload(client, alice, video_bytes)
    assert first.status_code == 202
    stored = object_names(api_settings.uploads_bucket)

    # The second original would not fit; the file streamed is discarded.
    body = assert_error(_upload(client, alice, video_bytes), 409, "storage_quota_exceeded")
    assert "delete tasks to make room" in body["error"]["message"]
    assert object_names(api_settings.uploads_bucket) == stored
    # A URL task still fits; once its clips fill the quota, nothing does.
    [by_url] = _submit(client, alice, 1)
    store_processed(engine, api_settings, by_url, [b"x" * 100])
    assert_error(
        client.post("/tasks", json={"url": SOURCE}, headers=alice.headers), 409, "storage_quota_exceeded"
    )
    # Another user has a quota of their own.
    assert _upload(client, bob, video_bytes).status_code == 202
    with engine.connect() as conn:
        counts = conn.execute(
            select(tasks.c.owner_id, func.count().label("count"))
            .group_by(tasks.c.owner_id)
            .order_by(func.count())
        ).all()
    assert [(row.owner_id, row.count) for row in counts] == [(bob.id, 1), (alice.id, 2)]

    # Deleting a task gives its room back.
    assert client.delete(first.headers["Location"], headers=alice.headers).status_code == 204
    assert _upload(client, alice, video_bytes).status_code == 202


def test_an_upload_that_cannot_fit_is_refused_before_its_body_is_read(
    make_app, api_settings, alice, video_bytes
):
    client = make_app(api_settings, max_stored_bytes_per_user=1000).test_client()
    body, content_type = multipart(("file", "big.mp4", video_bytes + b"\0" * (200 * 1024)))
    stream = io.BytesIO(body)
    response = client.post(
        "/tasks",
        input_stream=stream,
        content_type=content_type,
        content_length=len(body),
        headers=alice.headers,
    )
    assert_error(response, 409, "storage_quota_exceeded")
    assert stream.tell() == 0  # not one byte of the body was read
    assert object_names(api_settings.uploads_bucket) == []


def test_a_retry_that_raced_its_original_past_the_quota_is_answered_as_a_retry(
    make_app, api_settings, alice, video_bytes, monkeypatch
):
    from services.api import routes

    app = make_app(api_settings, max_stored_bytes_per_user=len(video_bytes) + 100)
    client = app.test_client()
    body, content_type = multipart(("file", "run.mp4", video_bytes))
    headers = alice.headers | {"Idempotency-Key": "run-7"}
    first = client.post("/tasks", data=body, content_type=content_type, headers=headers)
    assert first.status_code == 202
    stored = object_names(api_settings.uploads_bucket)

    # The retry looked the key up just before its original committed, so it streamed and
    # stored its own copy; the original now fills the quota.
    look_up = routes._find_by_key
    calls = []

    def late(owner, key):
        calls.append(key)
        return None if len(calls) == 1 else look_up(owner, key)

    monkeypatch.setattr(routes, "_find_by_key", late)
    retry = client.post("/tasks", data=body, content_type=content_type, headers=headers)

    assert retry.status_code == 200, retry.get_data(as_text=True)
    assert retry.get_json()["id"] == first.get_json()["id"]
    assert object_names(api_settings.uploads_bucket) == stored  # its own copy was discarded


# --- parts in flight ------------------------------------------------------------------------


def _units_out(settings, *, want: int) -> list[tuple[uuid.UUID, int | None]]:
    """The units that reached the workers' subscription, as (task, part) (None: a whole
    task's TaskSubmitted); waits for ``want`` of them."""
    events = pull_events(settings, settings.subscription_transcoder, want=want, timeout=10)
    return [(event.task_id, getattr(event, "index", None)) for event in events]


def _notify(engine, publisher, settings, event) -> None:
    """The notifier's handling of one task-events message: applied or recorded, then what
    it made room for let out, as the function does."""
    let_out(
        engine,
        publisher,
        settings,
        apply_event(engine, event, clips_bucket=settings.clips_bucket, settings=settings),
    )


def _hand_out(engine, publisher, settings, task_id: uuid.UUID, owner_id: uuid.UUID, parts: int) -> list:
    """What the worker that plans the task publishes: a PartSubmitted per part."""
    handed = [part_submitted(settings.clips_bucket, task_id, owner_id, n, parts) for n in range(1, parts + 1)]
    for part in handed:
        _notify(engine, publisher, settings, part)
    return handed


def _part_made(engine, publisher, settings, task_id: uuid.UUID, index: int) -> None:
    clip = ClipOutput(
        index=index,
        uri=gs_uri(settings.clips_bucket, layout.clip_object(task_id, index)),
        duration_seconds=20.0,
        size_bytes=1000,
    )
    event = TaskStatusChanged(
        task_id=task_id, status=TaskStatus.PROCESSING, attempt=1, part=index, progress=10, outputs=(clip,)
    )
    _notify(engine, publisher, settings, event)


def _dispatched_parts(engine, task_id: uuid.UUID) -> list[int]:
    with engine.connect() as conn:
        return sorted(
            conn.execute(
                select(task_parts.c.index).where(
                    task_parts.c.task_id == task_id, task_parts.c.dispatched_at.is_not(None)
                )
            ).scalars()
        )


def _part_rows(engine, task_id: uuid.UUID) -> list[int]:
    """The parts of the task whose PartSubmitted rows the outbox holds, published or not."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(outbox.c.attributes["part"].astext).where(
                outbox.c.attributes["event_type"].astext == "PartSubmitted",
                outbox.c.attributes["task_id"].astext == str(task_id),
            )
        ).scalars()
        return sorted(int(part) for part in rows)


def test_a_planned_tasks_parts_take_its_place_and_go_out_as_room_is_made(make_app, api_settings, alice, bob):
    settings = api_settings.model_copy(
        update={"max_parts_in_flight_per_user": 2, "outbox_republish_after_seconds": 0}
    )
    app = make_app(settings)
    client, engine, publisher = app.test_client(), app.extensions["engine"], app.extensions["publisher"]
    first, second, third = _submit(client, alice, 3)
    assert sorted(_units_out(settings, want=2)) == sorted([(first, None), (second, None)])

    # The worker that takes the first plans it into three parts: the task's place goes to
    # its parts, and the one place free lets the first part out, at once.
    _worker_reports(engine, settings, first, TaskStatus.PROCESSING)
    handed = _hand_out(engine, publisher, settings, first, alice.id, parts=3)
    assert _units_out(settings, want=1) == [(first, 1)]
    assert _dispatched_parts(engine, first) == [1]
    # Held parts' rows are never claimed by the relay, nor let out past the cap.
    assert relay_once(engine, publisher, settings) == 0
    assert release_held(engine, publisher, settings) == 0
    # Another user is not held behind alice's parts.
    [bobs] = _submit(client, bob, 1)
    assert _units_out(settings, want=1) == [(bobs, None)]

    # Part 1 made: part 2 goes out, before alice's later task.
    _part_made(engine, publisher, settings, first, 1)
    assert _units_out(settings, want=1) == [(first, 2)]
    # The second task ends: the first task's last part goes out, still before the third.
    _worker_reports(engine, settings, second, TaskStatus.PROCESSED, publisher=publisher)
    assert _units_out(settings, want=1) == [(first, 3)]
    assert client.get(f"/tasks/{third}", headers=alice.headers).get_json()["status"] == "queued"
    # Part 2 made: no part is held any more, so the third task goes out.
    _part_made(engine, publisher, settings, first, 2)
    assert _units_out(settings, want=1) == [(third, None)]

    # A part handed out again (its task's message came back) goes out again only if it
    # was let out and is not made: its message may have been lost.
    for part in handed:
        _notify(engine, publisher, settings, part.model_copy(update={"event_id": str(uuid.uuid4())}))
    assert _units_out(settings, want=1) == [(first, 3)]
    assert _part_rows(engine, first) == [1, 2, 3, 3]
    assert release_held(engine, publisher, settings) == 0
    assert count_rows(engine, outbox, outbox.c.published_at.is_(None)) == 0


def test_a_deleted_or_failed_tasks_held_parts_never_go_out(make_app, api_settings, alice):
    settings = api_settings.model_copy(
        update={"max_parts_in_flight_per_user": 1, "outbox_republish_after_seconds": 0}
    )
    app = make_app(settings)
    client, engine, publisher = app.test_client(), app.extensions["engine"], app.extensions["publisher"]
    deleted, failed, last = _submit(client, alice, 3)
    assert _units_out(settings, want=1) == [(deleted, None)]
    _worker_reports(engine, settings, deleted, TaskStatus.PROCESSING)
    _hand_out(engine, publisher, settings, deleted, alice.id, parts=3)
    assert _units_out(settings, want=1) == [(deleted, 1)]

    # Deleting the task withdraws its held parts with it; its place goes to the next task.
    assert client.delete(f"/tasks/{deleted}", headers=alice.headers).status_code == 204
    assert release_held(engine, publisher, settings) == 1
    assert _units_out(settings, want=1) == [(failed, None)]
    # A task that fails at a part drops its held parts: the next task goes out at once.
    _worker_reports(engine, settings, failed, TaskStatus.PROCESSING)
    _hand_out(engine, publisher, settings, failed, alice.id, parts=2)
    assert _units_out(settings, want=1) == [(failed, 1)]
    _worker_reports(engine, settings, failed, TaskStatus.FAILED, publisher=publisher)
    assert _units_out(settings, want=1) == [(last, None)]
    assert _part_rows(engine, deleted) == [1] and _part_rows(engine, failed) == [1]

    assert relay_once(engine, publisher, settings) == 0
    assert count_rows(engine, outbox, outbox.c.published_at.is_(None)) == 0
    assert _dispatched_parts(engine, deleted) == [1] and _dispatched_parts(engine, failed) == [1]
