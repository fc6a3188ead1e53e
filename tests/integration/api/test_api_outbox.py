"""The outbox: a task is never left queued without its message, whatever fails between
the database write and the publish."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from services.api import tasks as task_store
from services.api.tasks import IdempotencyKeyTaken, NewTask
from shared.events import ClipSpec
from shared.outbox import OutboxRelay, relay_once, requeue_stalled
from shared.pubsub import ensure_subscription, ensure_topic
from shared.tables import outbox, tasks
from tests.support.api import pull_events
from tests.support.db import cancel_task, count_rows

SOURCE = "https://videos.league.example/runs/run.mp4"


def _unpublished(engine) -> int:
    return count_rows(engine, outbox, outbox.c.published_at.is_(None))


def _queue_rows(engine, settings, owner_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """Tasks committed with their outbox rows, as if every publish after the commit was lost."""
    ids = []
    with engine.begin() as conn:
        for _ in range(count):
            new = NewTask(uuid.uuid4(), owner_id, "url", SOURCE, None, None, None, ClipSpec())
            task_store.create(conn, new, settings)
            ids.append(new.id)
    return ids


def test_a_failed_publish_is_retried_by_the_relay(make_app, api_settings, alice):
    missing_topic = f"video-tasks-later-{uuid.uuid4().hex[:8]}"
    settings = api_settings.model_copy(
        update={"topic_video_tasks": missing_topic, "outbox_publish_timeout_seconds": 2.0}
    )
    app = make_app(settings)
    engine = app.extensions["engine"]

    # Pub/Sub refuses the publish (here: the topic is not there yet); the task is kept.
    response = app.test_client().post("/tasks", json={"url": SOURCE}, headers=alice.headers)
    assert response.status_code == 202
    task_id = uuid.UUID(response.get_json()["id"])
    assert _unpublished(engine) == 1

    ensure_topic(settings, missing_topic)
    ensure_subscription(settings, f"{missing_topic}-sub", missing_topic, 10)
    due = settings.model_copy(update={"outbox_republish_after_seconds": 0})
    assert relay_once(engine, app.extensions["publisher"], due) == 1

    [event] = pull_events(settings, f"{missing_topic}-sub", task_id=task_id)
    assert event.event_type == "TaskSubmitted" and event.owner_id == alice.id
    assert _unpublished(engine) == 0
    assert relay_once(engine, app.extensions["publisher"], due) == 0


def test_the_relay_leaves_fresh_rows_to_the_request_that_wrote_them(app, engine, api_settings, alice):
    _queue_rows(engine, api_settings, alice.id, 2)
    fresh = api_settings.model_copy(update={"outbox_republish_after_seconds": 3600})
    assert relay_once(engine, app.extensions["publisher"], fresh) == 0
    assert _unpublished(engine) == 2


def test_replicas_never_claim_the_same_rows(app, engine, api_settings, alice):
    first, second = _queue_rows(engine, api_settings, alice.id, 2)
    due = api_settings.model_copy(update={"outbox_republish_after_seconds": 0})
    publisher = app.extensions["publisher"]

    # Another replica is publishing the first row right now (it holds the row lock).
    with engine.connect() as other_replica, other_replica.begin():
        other_replica.execute(select(outbox.c.id).order_by(outbox.c.id).limit(1).with_for_update())
        assert relay_once(engine, publisher, due) == 1
        events = pull_events(api_settings, api_settings.subscription_transcoder, want=1)
        assert [e.task_id for e in events] == [second]
    assert relay_once(engine, publisher, due) == 1
    assert [e.task_id for e in pull_events(api_settings, api_settings.subscription_transcoder)] == [first]
    assert _unpublished(engine) == 0


def test_the_relay_thread_drains_a_backlog_larger_than_a_batch(make_app, api_settings, alice):
    settings = api_settings.model_copy(
        update={
            "outbox_relay_interval_seconds": 0.2,
            "outbox_republish_after_seconds": 0,
            "outbox_relay_batch": 2,
            "max_parts_in_flight_per_user": 5,
        }
    )
    app = make_app(settings)
    engine = app.extensions["engine"]
    ids = _queue_rows(engine, settings, alice.id, 5)
    relay = OutboxRelay(engine, app.extensions["publisher"], settings)
    relay.start()
    try:
        events = pull_events(settings, settings.subscription_transcoder, want=5, timeout=20)
    finally:
        relay.stop()
    assert sorted(e.task_id for e in events) == sorted(ids)
    assert _unpublished(engine) == 0


def test_the_same_key_sent_at_once_makes_one_task(make_app, api_settings, alice):
    app = make_app(api_settings)
    barrier = threading.Barrier(6)
    answers = []

    def submit():
        client = app.test_client()
        barrier.wait()
        answers.append(
            client.post(
                "/tasks", json={"url": SOURCE}, headers=alice.headers | {"Idempotency-Key": "same-moment"}
            )
        )

    threads = [threading.Thread(target=submit) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(r.status_code for r in answers).count(202) == 1
    assert {r.status_code for r in answers} <= {200, 202}
    assert len({r.get_json()["id"] for r in answers}) == 1
    assert count_rows(app.extensions["engine"], tasks) == 1


def test_a_key_already_taken_is_reported_by_the_store(engine, api_settings, alice):
    new = NewTask(uuid.uuid4(), alice.id, "url", SOURCE, None, "taken", "fingerprint", ClipSpec())
    with engine.begin() as conn:
        task_store.create(conn, new, api_settings)
    again = NewTask(uuid.uuid4(), alice.id, "url", SOURCE, None, "taken", "fingerprint", ClipSpec())
    with pytest.raises(IdempotencyKeyTaken), engine.begin() as conn:
        task_store.create(conn, again, api_settings)
    assert count_rows(engine, tasks) == 1


def test_the_sweep_republishes_tasks_whose_message_was_lost_and_only_those(app, engine, api_settings, alice):
    queued, stale, busy, done, deleted = _queue_rows(engine, api_settings, alice.id, 5)
    with engine.begin() as conn:
        # Every TaskSubmitted went out an hour ago, and Pub/Sub then lost them all.
        an_hour_ago = func.now() - timedelta(hours=1)
        conn.execute(update(outbox).values(published_at=an_hour_ago))
        conn.execute(
            update(tasks).where(tasks.c.id == stale).values(status="processing", updated_at=an_hour_ago)
        )
        conn.execute(
            update(tasks).where(tasks.c.id == busy).values(status="processing", updated_at=func.now())
        )
        conn.execute(update(tasks).where(tasks.c.id == done).values(status="processed"))
    cancel_task(engine, deleted)
    sweep = api_settings.model_copy(
        update={"outbox_requeue_after_seconds": 600, "outbox_republish_after_seconds": 0}
    )

    assert requeue_stalled(engine, sweep) == 2
    assert relay_once(engine, app.extensions["publisher"], sweep) == 2
    events = pull_events(api_settings, api_settings.subscription_transcoder, want=2)
    assert sorted(str(e.task_id) for e in events) == sorted([str(queued), str(stale)])
    # Published again just now: the next sweep leaves them alone.
    assert requeue_stalled(engine, sweep) == 0
