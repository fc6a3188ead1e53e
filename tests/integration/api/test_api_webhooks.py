"""Webhooks end to end in one process: the api's /webhooks routes on the test's
database, the events the api and the notifier record, and a dispatcher delivering them
to a loopback receiver that verifies each one with the ``standardwebhooks`` library."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
import sqlalchemy
from sqlalchemy import func, insert, select

from services.dispatcher.dispatch import Dispatcher
from services.dispatcher.sender import Sender
from services.notifier.apply import apply_status_change
from shared import layout, webhooks
from shared.events import ClipOutput, TaskStatusChanged
from shared.lifecycle import TaskStatus
from shared.storage import storage_client
from shared.tables import webhook_deliveries, webhook_endpoints
from tests.support.api import assert_error
from tests.support.webhooks import Answer, Receiver

FAST = {
    "allow_loopback_webhooks": True,
    "webhook_retry_initial_seconds": 0.2,
    "webhook_retry_max_seconds": 1.0,
    "webhook_retry_window_seconds": 60.0,
    "dispatcher_poll_seconds": 0.05,
    "dispatcher_lease_seconds": 2.0,
}


@pytest.fixture
def hook_settings(api_settings):
    return api_settings.model_copy(update=FAST)


@pytest.fixture
def hook_app(make_app, hook_settings):
    return make_app(hook_settings)


@pytest.fixture
def api(hook_app):
    return hook_app.test_client()


@pytest.fixture
def engine(hook_app):
    return hook_app.extensions["engine"]


@pytest.fixture
def start_dispatcher(engine, hook_settings) -> Iterator:
    running = []

    def start(sender: Sender | None = None, **overrides) -> Dispatcher:
        dispatcher = Dispatcher(engine, hook_settings.model_copy(update=overrides), sender)
        thread = threading.Thread(target=dispatcher.run, daemon=True)
        thread.start()
        running.append((dispatcher, thread))
        return dispatcher

    yield start
    for dispatcher, thread in running:
        dispatcher.stop()
        thread.join(timeout=30)


def register(api, user, url, **fields):
    response = api.post("/webhooks", json={"url": url, **fields}, headers=user.headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def submit(api, user) -> str:
    response = api.post("/tasks", json={"url": "https://videos.example/run.mp4"}, headers=user.headers)
    assert response.status_code == 202, response.get_json()
    return response.get_json()["id"]


def settled_log(api, user, endpoint_id: str, done, timeout: float = 30) -> list[dict]:
    """The endpoint's delivery log once ``done(deliveries)`` holds (the dispatcher records an
    attempt just after the receiver answered it), or as it is at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        deliveries = api.get(f"/webhooks/{endpoint_id}/deliveries", headers=user.headers).get_json()[
            "deliveries"
        ]
        if done(deliveries) or time.monotonic() > deadline:
            return deliveries
        time.sleep(0.1)


def all_delivered(deliveries: list[dict]) -> bool:
    return bool(deliveries) and all(d["status"] == "delivered" for d in deliveries)


def events(receiver) -> list[dict]:
    return [json.loads(r.body) for r in receiver.received]


# --- the API -----------------------------------------------------------------------------


def test_an_endpoint_is_created_with_a_secret_shown_once(api, alice, engine):
    created = register(
        api, alice, "https://hooks.example/idrl", events=["task.processed"], description="league"
    )
    assert created["secret"].startswith("whsec_") and created["events"] == ["task.processed"]
    shown = api.get(f"/webhooks/{created['id']}", headers=alice.headers).get_json()
    assert "secret" not in shown and shown["url"] == "https://hooks.example/idrl"
    assert "secret" not in json.dumps(api.get("/webhooks", headers=alice.headers).get_json())
    with engine.connect() as conn:
        stored = conn.execute(select(webhook_endpoints.c.secret)).scalar_one()
    assert created["secret"].encode() not in bytes(stored)


def test_another_users_endpoints_are_invisible(api, alice, bob):
    mine = register(api, alice, "https://hooks.example/a")
    assert api.get("/webhooks", headers=bob.headers).get_json() == {"webhooks": []}
    for method, path in [
        ("get", f"/webhooks/{mine['id']}"),
        ("patch", f"/webhooks/{mine['id']}"),
        ("delete", f"/webhooks/{mine['id']}"),
        ("post", f"/webhooks/{mine['id']}/secret"),
        ("post", f"/webhooks/{mine['id']}/test"),
        ("get", f"/webhooks/{mine['id']}/deliveries"),
        ("post", f"/webhooks/{mine['id']}/deliveries/{uuid.uuid4()}/replay"),
    ]:
        kwargs = {"json": {"enabled": False}} if method == "patch" else {}
        assert_error(getattr(api, method)(path, headers=bob.headers, **kwargs), 404)
    assert api.get(f"/webhooks/{mine['id']}", headers=alice.headers).status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        ({"url": "ftp://hooks.example/x"}, 422),
        ({"url": "not a url"}, 422),
        ({"url": "http://10.0.0.1/hook"}, 422),
        ({"url": "http://169.254.169.254/latest"}, 422),
        ({"url": "http://metadata.google.internal/"}, 422),
        ({"url": "https://hooks.example/x", "events": ["task.exploded"]}, 422),
        ({"url": "https://hooks.example/x", "events": []}, 422),
        ({"url": "https://hooks.example/x", "description": "x" * 2000}, 422),
        ({"url": "https://hooks.example/x", "description": "x" * 1_000_000}, 413),
        ({"url": "https://hooks.example/x", "secret": "mine"}, 422),
        ({"url": 5}, 400),
        ({}, 400),
    ],
)
def test_bad_input_gets_a_clear_4xx(api, alice, body, status):
    assert_error(api.post("/webhooks", json=body, headers=alice.headers), status)


def test_a_non_json_body_is_refused(api, alice):
    assert_error(
        api.post("/webhooks", data="url=x", headers=alice.headers | {"Content-Type": "text/plain"}), 415
    )
    assert_error(
        api.post("/webhooks", data="{not json", headers=alice.headers | {"Content-Type": "application/json"}),
        400,
    )


def test_endpoints_per_user_are_capped(make_app, hook_settings, alice):
    api = make_app(hook_settings, webhook_endpoints_per_user=2).test_client()
    register(api, alice, "https://hooks.example/1")
    register(api, alice, "https://hooks.example/2")
    assert_error(api.post("/webhooks", json={"url": "https://hooks.example/3"}, headers=alice.headers), 409)


def test_production_takes_https_endpoints_only(make_app, hook_settings, alice):
    from services.api.webhooks import checked_url
    from shared.errors import Unprocessable

    production = hook_settings.model_copy(
        update={"environment": "production", "allow_loopback_webhooks": False}
    )
    with pytest.raises(Unprocessable):
        checked_url("http://hooks.example/x", production)
    assert checked_url("https://hooks.example/x", production) == "https://hooks.example/x"


# --- events and deliveries ------------------------------------------------------------------


def test_every_task_event_and_every_clip_arrives_signed(api, alice, engine, hook_settings, start_dispatcher):
    with Receiver() as receiver:
        created = register(api, alice, receiver.url)
        receiver.secrets = [created["secret"]]
        start_dispatcher()
        task_id = submit(api, alice)
        for status, outputs in [
            (TaskStatus.PROCESSING, ()),
            (
                TaskStatus.PROCESSED,
                tuple(
                    ClipOutput(
                        index=i,
                        uri=f"gs://{hook_settings.clips_bucket}/{layout.clip_object(task_id, i)}",
                        duration_seconds=20.0,
                        size_bytes=1000,
                    )
                    for i in range(2)
                ),
            ),
        ]:
            event = TaskStatusChanged(task_id=uuid.UUID(task_id), status=status, attempt=1, outputs=outputs)
            apply_status_change(
                engine, event, clips_bucket=hook_settings.clips_bucket, public_base_url="https://idrl.example"
            )
            # A redelivery of the same event writes nothing more.
            apply_status_change(
                engine, event, clips_bucket=hook_settings.clips_bucket, public_base_url="https://idrl.example"
            )
        assert api.delete(f"/tasks/{task_id}", headers=alice.headers).status_code in (204, 503)
        assert receiver.wait_for(lambda got: len(got) >= 6, timeout=30)
        time.sleep(0.5)  # nothing more should come
    kinds = sorted(e["type"] for e in events(receiver))
    assert kinds == sorted(
        ["task.queued", "task.processing", "task.processed", "clip.ready", "clip.ready", "task.deleted"]
    )
    assert all(r.verified for r in receiver.received)
    assert len({r.webhook_id for r in receiver.received}) == 6
    clips = [e for e in events(receiver) if e["type"] == "clip.ready"]
    assert sorted(c["data"]["clip"]["index"] for c in clips) == [0, 1]
    assert clips[0]["data"]["id"] == task_id
    assert clips[0]["data"]["clip"]["links"]["download"].startswith(
        f"https://idrl.example/tasks/{task_id}/clips/"
    )
    processed = next(e for e in events(receiver) if e["type"] == "task.processed")
    assert processed["data"]["status"] == "processed" and len(processed["data"]["clips"]) == 2


def test_each_clip_is_announced_once_as_soon_as_it_is_made(
    api, alice, engine, hook_settings, start_dispatcher
):
    def clip(task_id: str, index: int) -> ClipOutput:
        uri = f"gs://{hook_settings.clips_bucket}/{layout.clip_object(task_id, index)}"
        return ClipOutput(index=index, uri=uri, duration_seconds=20.0, size_bytes=1000)

    def apply(task_id: str, status: TaskStatus, **fields) -> None:
        event = TaskStatusChanged(task_id=uuid.UUID(task_id), status=status, attempt=1, **fields)
        apply_status_change(
            engine, event, clips_bucket=hook_settings.clips_bucket, public_base_url="https://idrl.example"
        )

    with Receiver() as receiver:
        created = register(api, alice, receiver.url, events=["clip.ready", "task.processed"])
        receiver.secrets = [created["secret"]]
        start_dispatcher()
        task_id = submit(api, alice)
        apply(task_id, TaskStatus.PROCESSING, clips_total=2)
        apply(task_id, TaskStatus.PROCESSING, progress=50, outputs=(clip(task_id, 0),))
        assert receiver.wait_for(lambda got: len(got) >= 1, timeout=30)
        first = events(receiver)[0]
        # Announced while the task still runs: the clip, and the task with what is made so far.
        assert first["type"] == "clip.ready" and first["data"]["clip"]["index"] == 0
        assert (first["data"]["status"], first["data"]["clips_total"]) == ("processing", 2)
        assert [c["index"] for c in first["data"]["clips"]] == [0]
        storage_client().bucket(hook_settings.clips_bucket).blob(
            layout.clip_object(task_id, 0)
        ).upload_from_string(b"part 0", content_type="video/mp4")
        downloaded = api.get(f"/tasks/{task_id}/clips/0", headers=alice.headers)
        assert (downloaded.status_code, downloaded.data) == (200, b"part 0")

        # The processed event names both clips: only the new one is announced.
        apply(task_id, TaskStatus.PROCESSED, progress=100, outputs=(clip(task_id, 0), clip(task_id, 1)))
        assert receiver.wait_for(lambda got: len(got) >= 3, timeout=30)
        time.sleep(0.5)  # nothing more should come
    kinds = [(e["type"], e["data"].get("clip", {}).get("index", -1)) for e in events(receiver)]
    assert kinds[0] == ("clip.ready", 0)
    assert sorted(kinds[1:]) == [("clip.ready", 1), ("task.processed", -1)]
    assert all(r.verified for r in receiver.received)


def test_a_receiver_that_refuses_at_first_gets_everything_once_it_accepts(api, alice, start_dispatcher):
    with Receiver(lambda n: Answer(503) if n < 6 else Answer(200)) as receiver:
        created = register(api, alice, receiver.url)
        receiver.secrets = [created["secret"]]
        tasks = [submit(api, alice) for _ in range(3)]
        start_dispatcher()
        assert receiver.wait_for(
            lambda got: {json.loads(r.body)["data"]["id"] for r in got[6:]} == set(tasks), timeout=60
        )
        deliveries = settled_log(api, alice, created["id"], all_delivered)
    assert all(r.verified for r in receiver.received)
    by_id: dict[str, set[bytes]] = {}
    for r in receiver.received:
        by_id.setdefault(r.webhook_id, set()).add(r.body)
    assert len(by_id) == 3 and all(len(bodies) == 1 for bodies in by_id.values())
    assert {d["status"] for d in deliveries} == {"delivered"}
    assert sum(d["attempts"] for d in deliveries) == len(receiver.received)


def test_retry_after_is_honoured(api, alice, start_dispatcher):
    with Receiver(lambda n: Answer(429, {"Retry-After": "2"}) if n == 0 else Answer(200)) as receiver:
        register(api, alice, receiver.url, events=["task.queued"])
        # Without the header the first pause would be at most 0.2 s.
        start_dispatcher(webhook_retry_max_seconds=5.0)
        submit(api, alice)
        assert receiver.wait_for(lambda got: len(got) == 2, timeout=30)
    first, second = receiver.received
    assert second.at - first.at >= 2.0
    assert first.webhook_id == second.webhook_id


def test_a_slow_receiver_times_out_and_is_retried(api, alice, start_dispatcher):
    with Receiver(lambda n: Answer(200, delay=3) if n == 0 else Answer(200)) as receiver:
        created = register(api, alice, receiver.url, events=["task.queued"])
        start_dispatcher(webhook_attempt_timeout_seconds=0.5)
        submit(api, alice)
        assert receiver.wait_for(lambda got: len(got) == 2, timeout=30)
        deliveries = settled_log(api, alice, created["id"], all_delivered)
    assert [d["status"] for d in deliveries] == ["delivered"] and deliveries[0]["attempts"] == 2


def test_a_redirect_is_not_followed(api, alice, start_dispatcher):
    with Receiver(lambda n: Answer(307, {"Location": "http://127.0.0.1:1/elsewhere"})) as receiver:
        created = register(api, alice, receiver.url, events=["task.queued"])
        start_dispatcher()
        submit(api, alice)
        assert receiver.wait_for(lambda got: len(got) == 1, timeout=30)
        path = f"/webhooks/{created['id']}/deliveries?status=failed"
        deadline = time.monotonic() + 30
        while (
            not (failed := api.get(path, headers=alice.headers).get_json()["deliveries"])
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
    assert len(receiver.received) == 1
    assert failed[0]["last_status_code"] == 307 and failed[0]["attempts"] == 1


def test_a_name_resolving_to_a_private_address_is_refused_at_delivery(
    api, alice, start_dispatcher, hook_settings
):
    created = register(api, alice, "http://hooks.league.example/in", events=["task.queued"])
    sender = Sender(
        timeout=2, allow_loopback=True, https_only=False, resolver=lambda host, port: ["10.0.0.1"]
    )
    start_dispatcher(sender)
    submit(api, alice)
    (delivery,) = settled_log(api, alice, created["id"], lambda found: found and found[0]["last_attempt_at"])
    assert delivery["last_status_code"] is None
    assert "private address" in delivery["last_error"]


def test_secret_rotation_signs_with_both_secrets_during_the_overlap(api, alice, start_dispatcher):
    with Receiver() as receiver:
        created = register(api, alice, receiver.url)
        rotated = api.post(f"/webhooks/{created['id']}/secret", headers=alice.headers).get_json()
        assert rotated["secret"] != created["secret"]
        receiver.secrets = [created["secret"], rotated["secret"]]
        start_dispatcher()
        api.post(f"/webhooks/{created['id']}/test", headers=alice.headers)
        assert receiver.wait_for(lambda got: len(got) == 1, timeout=30)
    (only,) = receiver.received
    assert only.verified and len(only.headers["webhook-signature"].split(" ")) == 2
    assert json.loads(only.body)["type"] == "webhook.test"


def test_replay_sends_the_same_webhook_id_again(api, alice, start_dispatcher):
    with Receiver() as receiver:
        created = register(api, alice, receiver.url)
        receiver.secrets = [created["secret"]]
        start_dispatcher()
        sent = api.post(f"/webhooks/{created['id']}/test", headers=alice.headers)
        assert sent.status_code == 202
        assert receiver.wait_for(lambda got: len(got) == 1, timeout=30)
        replayed = api.post(
            f"/webhooks/{created['id']}/deliveries/{sent.get_json()['id']}/replay", headers=alice.headers
        )
        assert replayed.status_code == 202
        assert receiver.wait_for(lambda got: len(got) == 2, timeout=30)
    first, second = receiver.received
    assert first.webhook_id == second.webhook_id == sent.get_json()["webhook_id"]
    assert first.body == second.body and second.verified


def test_an_endpoint_that_always_fails_is_disabled_and_its_owner_re_enables_it(api, alice, start_dispatcher):
    accepting = threading.Event()
    with Receiver(lambda n: Answer(200) if accepting.is_set() else Answer(500)) as receiver:
        created = register(api, alice, receiver.url, events=["task.queued"])
        start_dispatcher(webhook_disable_after_seconds=1.0)
        submit(api, alice)
        path = f"/webhooks/{created['id']}"
        deadline = time.monotonic() + 30
        while api.get(path, headers=alice.headers).get_json()["enabled"] and time.monotonic() < deadline:
            time.sleep(0.1)
        endpoint = api.get(path, headers=alice.headers).get_json()
        assert endpoint["enabled"] is False and endpoint["disabled_reason"]
        # Disabled: no new delivery is written for it.
        submit(api, alice)
        accepting.set()
        assert api.patch(path, json={"enabled": True}, headers=alice.headers).get_json()["enabled"] is True
        assert receiver.wait_for(lambda got: got and got[-1].webhook_id and len(got) >= 2, timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            deliveries = api.get(f"{path}/deliveries", headers=alice.headers).get_json()["deliveries"]
            if {d["status"] for d in deliveries} == {"delivered"}:
                break
            time.sleep(0.1)
    assert len(deliveries) == 1 and deliveries[0]["status"] == "delivered"


def test_a_delivery_another_dispatcher_is_taking_is_skipped_not_waited_for(api, alice, hook_settings):
    """While another transaction holds the oldest due delivery's row (a claim under way),
    a dispatcher takes the next one at once: waiting for the row would run into the lock
    timeout and fail the test."""
    endpoint_id = register(api, alice, "https://hooks.example/a")["id"]
    held, free = uuid.uuid4(), uuid.uuid4()
    engine = sqlalchemy.create_engine(
        hook_settings.database_url, connect_args={"startup_params": {"lock_timeout": "5s"}}
    )
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(webhook_deliveries).values(
                    [
                        {
                            "id": delivery_id,
                            "endpoint_id": endpoint_id,
                            "message_id": webhooks.new_message_id(),
                            "event_type": webhooks.TEST_EVENT,
                            "body": "{}",
                            "next_attempt_at": func.now() - timedelta(seconds=due_for),
                        }
                        for delivery_id, due_for in ((held, 2), (free, 1))
                    ]
                )
            )
        with engine.begin() as holder:
            holder.execute(
                select(webhook_deliveries.c.id).where(webhook_deliveries.c.id == held).with_for_update()
            )
            taken = Dispatcher(engine, hook_settings).take(2)
        assert [(delivery.id, delivery.attempts) for delivery in taken] == [(free, 1)]
    finally:
        engine.dispose()


def test_a_dispatcher_killed_mid_delivery_lets_another_deliver_it(
    api, alice, engine, hook_settings, start_dispatcher
):
    """The first dispatcher takes the delivery and never records it (as if killed while
    the receiver answered); once its lease ends, a second one delivers it."""
    hung, release = threading.Event(), threading.Event()

    class Hanging(Sender):
        def send(self, url, headers, body):
            result = super().send(url, headers, body)
            hung.set()
            release.wait(60)  # the process "died" here: it records nothing before the test ends
            return result

    with Receiver() as receiver:
        created = register(api, alice, receiver.url, events=["task.queued"])
        receiver.secrets = [created["secret"]]
        doomed = Dispatcher(engine, hook_settings, Hanging(timeout=5, allow_loopback=True, https_only=False))
        doomed_thread = threading.Thread(target=doomed.run, daemon=True)
        doomed_thread.start()
        submit(api, alice)
        assert hung.wait(30)
        doomed.stop()
        start_dispatcher()
        assert receiver.wait_for(lambda got: len(got) == 2, timeout=30)
        time.sleep(hook_settings.dispatcher_lease_seconds + 0.5)
        release.set()
        doomed_thread.join(30)
        deliveries = settled_log(api, alice, created["id"], all_delivered)
    assert [(d["status"], d["attempts"]) for d in deliveries] == [("delivered", 2)]
    assert len(receiver.received) == 2  # the lost attempt and its one duplicate
    assert receiver.received[0].webhook_id == receiver.received[1].webhook_id
    assert all(r.verified for r in receiver.received)


def _written(engine, endpoint_id: str) -> list[dict]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(webhook_deliveries.c.event_type, webhook_deliveries.c.body)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id)
            .order_by(webhook_deliveries.c.created_at)
        ).all()
    return [json.loads(row.body) for row in rows]


def test_cancel_delete_and_failure_write_their_events_with_the_change(api, alice, bob, engine, hook_settings):
    mine = register(
        api, alice, "https://hooks.example/a", events=["task.canceled", "task.deleted", "task.failed"]
    )
    others = register(api, bob, "https://hooks.example/b")
    canceled = submit(api, alice)
    assert api.delete(f"/tasks/{canceled}", headers=alice.headers).status_code in (204, 503)
    api.delete(f"/tasks/{canceled}", headers=alice.headers)  # a repeated DELETE writes nothing more
    failed = submit(api, alice)
    event = TaskStatusChanged(
        task_id=uuid.UUID(failed),
        status=TaskStatus.FAILED,
        attempt=3,
        failure_reason="the source answered HTTP 404",
    )
    apply_status_change(engine, event, clips_bucket=hook_settings.clips_bucket, public_base_url="")
    written = _written(engine, mine["id"])
    assert [(e["type"], e["data"]["id"]) for e in written] == [
        ("task.canceled", canceled),
        ("task.deleted", canceled),
        ("task.failed", failed),
    ]
    assert written[0]["data"]["status"] == "canceled"
    assert written[2]["data"]["failure_reason"] == "the source answered HTTP 404"
    assert _written(engine, others["id"]) == []  # another user's endpoint hears nothing of alice's tasks


def test_a_dispatcher_outlives_a_database_it_cannot_reach(hook_settings, caplog):
    from infra.local import free_port

    unreachable = sqlalchemy.create_engine(f"postgresql+pg8000://idrl@127.0.0.1:{free_port()}/idrl")
    dispatcher = Dispatcher(unreachable, hook_settings)
    thread = threading.Thread(target=dispatcher.run, daemon=True)
    with caplog.at_level("WARNING", logger="services.dispatcher"):
        thread.start()
        thread.join(timeout=3)
        assert thread.is_alive()  # still asking, not exited
        dispatcher.stop()
        thread.join(timeout=30)
    unreachable.dispose()
    assert not thread.is_alive()
    assert any("database unavailable" in record.message for record in caplog.records)
