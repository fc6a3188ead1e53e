"""The notifier as it runs: the pull runner on the Pub/Sub emulator, and the function
served over HTTP by functions-framework, each a real process on the test's database."""

from __future__ import annotations

import base64
import json
import signal
import sys
import uuid
from pathlib import Path

import requests
from cloudevents.conversion import to_binary
from cloudevents.http import CloudEvent
from google.api_core.exceptions import DeadlineExceeded
from google.cloud import pubsub_v1

from infra.local import free_port
from infra.local.process import http_probe, wait_until
from shared import layout
from shared.events import ClipOutput, TaskStatusChanged, encode
from shared.lifecycle import TaskStatus
from shared.pubsub import Publisher, subscription_path
from shared.tables import task_history
from tests.support.db import clip_rows, count_rows, task_row

PYTHON = sys.executable
FUNCTIONS_FRAMEWORK = str(Path(sys.executable).parent / "functions-framework")


def status_and_progress(engine, task_id) -> tuple[str, int]:
    row = task_row(engine, task_id)
    return row["status"], row["progress"]


def history_count(engine, task_id) -> int:
    return count_rows(engine, task_history, task_history.c.task_id == task_id)


def log_lines(process, fragment):
    return [line for line in process.log_path.read_text().splitlines() if fragment in line]


def pull_leftovers(settings):
    """Messages still on the notifier subscription (none, when all were acked)."""
    with pubsub_v1.SubscriberClient() as subscriber:
        try:
            response = subscriber.pull(
                subscription=subscription_path(settings, settings.subscription_notifier),
                max_messages=10,
                timeout=3,
            )
        except DeadlineExceeded:
            return []
        return list(response.received_messages)


def stop_and_wait(process):
    process.send_stop()
    return process.popen.wait(timeout=30)


def test_the_runner_applies_events_published_to_the_emulator(
    settings, engine, make_task, notifier_env, start_process
):
    task_id = make_task()
    runner = start_process("notifier", [PYTHON, "-m", "services.notifier"], notifier_env())
    publisher = Publisher(settings)
    clip = ClipOutput(
        index=0,
        uri=f"gs://{settings.clips_bucket}/{layout.clip_object(task_id, 0)}",
        duration_seconds=12.0,
        size_bytes=4096,
    )
    publisher.publish_raw(
        settings.topic_task_events, b"{not json", {"event_type": "TaskStatusChanged", "task_id": str(task_id)}
    ).result()
    for event in (
        TaskStatusChanged(task_id=task_id, status=TaskStatus.PROCESSING, attempt=1, progress=40),
        TaskStatusChanged(
            task_id=task_id, status=TaskStatus.PROCESSED, attempt=1, progress=100, outputs=(clip,)
        ),
    ):
        publisher.publish(settings.topic_task_events, event).result()

    assert wait_until(lambda: task_row(engine, task_id)["status"] == "processed", timeout=60), (
        runner.log_excerpt()
    )
    assert stop_and_wait(runner) == 0, runner.log_excerpt()

    assert task_row(engine, task_id)["progress"] == 100
    assert [row["uri"] for row in clip_rows(engine, task_id, "uri")] == [clip.uri]
    dropped = log_lines(runner, "dropped a malformed event")
    assert len(dropped) == 1 and json.loads(dropped[0])["task_id"] == str(task_id)
    assert log_lines(runner, "stopping on SIGTERM")
    assert pull_leftovers(settings) == []  # every message acked, the malformed one too


def test_the_runner_redelivers_while_the_database_is_down_and_loses_nothing(
    settings, engine, make_task, notifier_env, start_process, database_link
):
    task_id = make_task()
    runner = start_process(
        "notifier", [PYTHON, "-m", "services.notifier"], notifier_env(DATABASE_URL=database_link.url)
    )
    event = TaskStatusChanged(task_id=task_id, status=TaskStatus.PROCESSING, attempt=1, progress=10)
    Publisher(settings).publish(settings.topic_task_events, event).result()

    # Delivered, raised, nacked, delivered again: it keeps coming back while the link is down.
    assert wait_until(lambda: len(log_lines(runner, "will be redelivered")) >= 2, timeout=60), (
        runner.log_excerpt()
    )
    assert task_row(engine, task_id)["status"] == "queued"

    database_link.up()
    assert wait_until(lambda: task_row(engine, task_id)["status"] == "processing", timeout=60), (
        runner.log_excerpt()
    )
    assert history_count(engine, task_id) == 1
    assert stop_and_wait(runner) == 0
    assert pull_leftovers(settings) == []


def test_sigint_stops_the_runner_cleanly(notifier_env, start_process):
    runner = start_process("notifier", [PYTHON, "-m", "services.notifier"], notifier_env())
    assert wait_until(lambda: bool(log_lines(runner, "pulling")), timeout=60), runner.log_excerpt()
    runner.popen.send_signal(signal.SIGINT)
    assert runner.popen.wait(timeout=30) == 0
    assert log_lines(runner, "stopping on SIGINT") and log_lines(runner, '"stopped"')


def eventarc_cloud_event(settings, data: bytes, attributes: dict[str, str]) -> CloudEvent:
    message_id = str(uuid.uuid4().int % 10**16)
    return CloudEvent(
        {
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "source": f"//pubsub.googleapis.com/projects/{settings.google_cloud_project}"
            f"/topics/{settings.topic_task_events}",
            "id": message_id,
        },
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attributes,
                "messageId": message_id,
                "publishTime": "2026-05-01T09:00:00.000Z",
            },
            "subscription": f"projects/{settings.google_cloud_project}/subscriptions/"
            f"{settings.subscription_notifier}",
        },
    )


def post(url, cloud_event):
    headers, body = to_binary(cloud_event)
    return requests.post(url, headers=headers, data=body, timeout=30)


def test_functions_framework_serves_the_function_over_http(
    settings, engine, make_task, notifier_env, start_process, database_link
):
    port = free_port()
    env = notifier_env(DATABASE_URL=database_link.url)
    del env["PYTHONPATH"]  # main.py must find the project on its own, as when deployed
    server = start_process(
        "functions-framework",
        [
            FUNCTIONS_FRAMEWORK,
            "--target",
            "on_task_event",
            "--source",
            "services/notifier/main.py",
            "--signature-type",
            "cloudevent",
            "--host",
            "127.0.0.1",
            "--port",
            port,
        ],
        env,
    )
    url = f"http://127.0.0.1:{port}/"
    server.wait_ready(http_probe(url, accept=lambda status: True), timeout=60)
    task_id = make_task()
    database_link.up()

    processing = TaskStatusChanged(task_id=task_id, status=TaskStatus.PROCESSING, attempt=1, progress=25)
    response = post(url, eventarc_cloud_event(settings, *encode(processing)))
    assert response.status_code == 200, response.text
    assert status_and_progress(engine, task_id) == ("processing", 25)

    # Malformed: acknowledged (2xx), so Eventarc does not retry it; nothing changes.
    response = post(url, eventarc_cloud_event(settings, b'{"schema_version": 1', {}))
    assert response.status_code == 200
    assert history_count(engine, task_id) == 1

    # Database unreachable: an error status, so Eventarc delivers the event again.
    database_link.down()
    later = TaskStatusChanged(task_id=task_id, status=TaskStatus.PROCESSING, attempt=1, progress=70)
    response = post(url, eventarc_cloud_event(settings, *encode(later)))
    assert response.status_code >= 500
    assert status_and_progress(engine, task_id) == ("processing", 25)

    database_link.up()
    response = post(url, eventarc_cloud_event(settings, *encode(later)))  # the retry
    assert response.status_code == 200
    assert status_and_progress(engine, task_id) == ("processing", 70)
