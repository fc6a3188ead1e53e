"""The local runner's CloudEvent is the one Eventarc delivers, and ack follows the function."""

import base64
import queue
import uuid
from datetime import UTC, datetime

import pytest
from google.cloud.pubsub_v1.subscriber import message as pubsub_message
from google.cloud.pubsub_v1.subscriber._protocol import requests
from google.cloud.pubsub_v1.types import PubsubMessage
from google.protobuf.timestamp_pb2 import Timestamp

from services.notifier import main, runner
from shared.config import Settings
from shared.events import TaskStatusChanged, encode
from shared.lifecycle import TaskStatus

SETTINGS = Settings(
    google_cloud_project="proj", topic_task_events="events", subscription_notifier="events-sub"
)


def received(data: bytes, attributes: dict[str, str], requests_sent: queue.Queue):
    published = Timestamp()
    published.FromDatetime(datetime(2026, 3, 1, 12, 0, 0, 250000))
    raw = PubsubMessage(data=data, attributes=attributes, message_id="4711", publish_time=published)._pb
    return pubsub_message.Message(raw, "ack-1", 0, requests_sent)


def test_the_cloud_event_has_eventarcs_pubsub_shape():
    event = TaskStatusChanged(task_id=uuid.uuid4(), status=TaskStatus.PROCESSING, attempt=1)
    data, attributes = encode(event)
    cloud_event = runner.cloud_event_for(received(data, attributes, queue.Queue()), SETTINGS)

    assert cloud_event["type"] == "google.cloud.pubsub.topic.v1.messagePublished"
    assert cloud_event["source"] == "//pubsub.googleapis.com/projects/proj/topics/events"
    assert cloud_event["id"] == "4711"
    assert cloud_event["time"] == "2026-03-01T12:00:00.250000Z"
    assert cloud_event.data["subscription"] == "projects/proj/subscriptions/events-sub"
    message = cloud_event.data["message"]
    assert base64.b64decode(message["data"]) == data
    assert message["attributes"] == attributes
    assert message["messageId"] == message["message_id"] == "4711"
    assert message["publishTime"] == "2026-03-01T12:00:00.250000Z"
    assert main.decode_message(message) == event


def test_ack_only_after_the_function_returned_and_nack_when_it_raised(monkeypatch):
    monkeypatch.setattr(runner, "RETRY_DELAY_SECONDS", 0)
    seen = []

    def database_down(cloud_event):
        seen.append(cloud_event["id"])
        raise ConnectionRefusedError("database down")

    sent = queue.Queue()
    runner.make_callback(SETTINGS, seen.append)(received(b"{}", {}, sent))
    runner.make_callback(SETTINGS, database_down)(received(b"{}", {}, sent))

    assert seen[1] == "4711"
    assert isinstance(sent.get_nowait(), requests.AckRequest)
    assert isinstance(sent.get_nowait(), requests.NackRequest)
    assert sent.empty()


@pytest.mark.parametrize(
    "message, reason",
    [
        (None, "no Pub/Sub message"),
        ({"attributes": {}}, "no data"),
        ({"data": "%%%not base64"}, "not base64"),
        ({"data": base64.b64encode(b"{oops").decode()}, "not JSON"),
        (
            {"data": base64.b64encode(b'{"event_type": "TaskStatusChanged", "schema_version": 9}').decode()},
            "schema version",
        ),
        ({"data": "A" * (main.MAX_EVENT_BYTES * 2)}, "larger than"),
    ],
)
def test_messages_that_are_not_events_are_named_malformed(message, reason):
    with pytest.raises(main.MalformedEvent, match=reason):
        main.decode_message(message)


def test_a_task_submitted_on_task_events_is_malformed():
    from shared.events import TaskSubmitted

    data, _ = encode(TaskSubmitted(task_id=uuid.uuid4(), owner_id=uuid.uuid4(), source="gs://u/x"))
    with pytest.raises(main.MalformedEvent, match="does not belong"):
        main.decode_message({"data": base64.b64encode(data).decode()})


def test_rfc3339_is_utc_with_z():
    assert runner._rfc3339(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05.000000Z"
