"""Helpers the api tests share: what reached Pub/Sub and Cloud Storage, the error shape."""

from __future__ import annotations

import time
import uuid

from google.api_core.exceptions import DeadlineExceeded
from google.cloud import pubsub_v1

from shared.config import Settings
from shared.events import Event, decode, subscription_path
from shared.storage import storage_client


def pull_events(settings: Settings, subscription: str, *, task_id: uuid.UUID | None = None,
                want: int = 1, timeout: float = 10.0) -> list[Event]:
    """Events on ``subscription`` (for ``task_id`` when given), acked; waits until
    ``want`` arrived or ``timeout`` seconds passed."""
    found: list[Event] = []
    deadline = time.monotonic() + timeout
    path = subscription_path(settings, subscription)
    with pubsub_v1.SubscriberClient() as subscriber:
        while len(found) < want and time.monotonic() < deadline:
            try:
                response = subscriber.pull(subscription=path, max_messages=50, timeout=2)
            except DeadlineExceeded:
                continue
            if response.received_messages:
                subscriber.acknowledge(subscription=path,
                                       ack_ids=[m.ack_id for m in response.received_messages])
            for received in response.received_messages:
                event = decode(received.message.data, dict(received.message.attributes))
                if task_id is None or event.task_id == task_id:
                    found.append(event)
    return found


def object_names(bucket: str, prefix: str = "") -> list[str]:
    return [blob.name for blob in storage_client().list_blobs(bucket, prefix=prefix)]


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The platform's error shape with ``status`` (and ``code``), never a traceback."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert "Traceback" not in response.get_data(as_text=True)
    if code:
        assert body["error"]["code"] == code, body
    return body
