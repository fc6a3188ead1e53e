"""The local runner: pulls ``task-events-notifier`` and hands every message to the Cloud
Function as the CloudEvent Eventarc would deliver, so the same code runs in both places.

Ack only after the function returned; nack when it raised (Pub/Sub redelivers). On
SIGTERM or SIGINT the streaming pull is cancelled, the callbacks running are awaited,
and the process exits 0; a pull that ends for good before that is opened again
(``shared.pubsub.keep_pulling``).
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from datetime import UTC, datetime

from cloudevents.http import CloudEvent
from google.cloud import pubsub_v1

from shared.config import Settings
from shared.logging import about_task, task_logger
from shared.pubsub import keep_pulling, stop_on_signals, subscription_path, topic_path

logger = task_logger(__name__)

PUBSUB_EVENT_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
# Messages applied at once; each holds a database connection while it runs.
MAX_MESSAGES_IN_FLIGHT = 4
# A nack makes Pub/Sub redeliver at once; while the database is down that would spin.
# Google Cloud's subscription retry policy backs off instead; locally we wait here.
RETRY_DELAY_SECONDS = 1.0


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def cloud_event_for(
    message: pubsub_v1.subscriber.message.Message,
    settings: Settings,
    topic: str | None = None,
    subscription: str | None = None,
) -> CloudEvent:
    """The CloudEvent Eventarc delivers to a function for ``message`` (a Pub/Sub
    ``messagePublished`` event, with both spellings of its message fields)."""
    topic = topic or settings.topic_task_events
    subscription = subscription or settings.subscription_notifier
    publish_time = _rfc3339(message.publish_time)
    pubsub_message = {
        "data": base64.b64encode(message.data).decode("ascii"),
        "attributes": dict(message.attributes),
        "messageId": message.message_id,
        "message_id": message.message_id,
        "publishTime": publish_time,
        "publish_time": publish_time,
    }
    if message.ordering_key:
        pubsub_message["orderingKey"] = message.ordering_key
    attributes = {
        "id": message.message_id,
        "type": PUBSUB_EVENT_TYPE,
        "source": f"//pubsub.googleapis.com/{topic_path(settings, topic)}",
        "specversion": "1.0",
        "time": publish_time,
        "datacontenttype": "application/json",
    }
    data = {
        "message": pubsub_message,
        "subscription": subscription_path(settings, subscription),
    }
    return CloudEvent(attributes, data)


def make_callback(
    settings: Settings, function: Callable[[CloudEvent], object]
) -> Callable[[pubsub_v1.subscriber.message.Message], None]:
    """The streaming pull callback: call ``function``; ack when it returns, nack when
    it raises."""

    def callback(message: pubsub_v1.subscriber.message.Message) -> None:
        try:
            function(cloud_event_for(message, settings))
        except Exception:
            # The function raises exactly when the message must come back (database down).
            with about_task(message.attributes.get("task_id")):
                logger.exception(
                    "the function raised; the message will be redelivered",
                    extra={"message_id": message.message_id},
                )
            threading.Event().wait(RETRY_DELAY_SECONDS)
            message.nack()
            return
        message.ack()

    return callback


def run(settings: Settings, function: Callable[[CloudEvent], object]) -> None:
    """Pull the notifier subscription until SIGTERM or SIGINT. A pull that ends for good
    meanwhile (the subscription missing for a moment) is opened again after a pause."""
    path = subscription_path(settings, settings.subscription_notifier)
    stop = stop_on_signals()
    logger.info("pulling %s", path)
    keep_pulling(
        path,
        make_callback(settings, function),
        pubsub_v1.types.FlowControl(max_messages=MAX_MESSAGES_IN_FLIGHT),
        stop,
    )
    logger.info("stopped")
