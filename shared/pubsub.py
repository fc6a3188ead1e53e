"""Thin Pub/Sub helpers: the publisher, streaming pulls that outlive a missing
subscription, stop signals, and the topology (topics and subscriptions).

The clients talk to the emulator when ``PUBSUB_EMULATOR_HOST`` is set, to Pub/Sub otherwise.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from functools import lru_cache
from types import FrameType

from google.api_core.exceptions import AlreadyExists, NotFound
from google.cloud import pubsub_v1
from google.cloud.pubsub_v1.publisher.futures import Future as PublishFuture

from shared.config import Settings
from shared.events import Event, encode

log = logging.getLogger(__name__)

# A streaming pull that ended for good is opened again after a pause that starts here
# and doubles with each failure in a row, up to the maximum.
REOPEN_FIRST_SECONDS = 1.0
REOPEN_MAX_SECONDS = 30.0
# How often a pull looks at its stop event (a signal handler sets it).
_STOP_POLL_SECONDS = 0.5


def topic_path(settings: Settings, topic: str) -> str:
    return pubsub_v1.PublisherClient.topic_path(settings.google_cloud_project, topic)


def subscription_path(settings: Settings, subscription: str) -> str:
    return pubsub_v1.SubscriberClient.subscription_path(settings.google_cloud_project, subscription)


@lru_cache(maxsize=1)
def publisher_client() -> pubsub_v1.PublisherClient:
    """The process's publisher client (created once; it batches and retries)."""
    return pubsub_v1.PublisherClient(batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.01))


class Publisher:
    """Publishes events to the topics named in ``settings``."""

    def __init__(self, settings: Settings, client: pubsub_v1.PublisherClient | None = None):
        self.settings = settings
        self.client = client or publisher_client()

    def publish(self, topic: str, event: Event) -> PublishFuture:
        """Publish ``event`` to ``topic``; returns the client's future (``.result()``
        gives the message id, or raises)."""
        data, attributes = encode(event)
        return self.publish_raw(topic, data, attributes)

    def publish_raw(self, topic: str, data: bytes, attributes: dict[str, str]) -> PublishFuture:
        """Publish an already encoded message (the outbox stores them encoded)."""
        # The client takes attributes as keyword arguments; none of the platform's is
        # named like one of its parameters (ordering_key, retry, timeout).
        return self.client.publish(topic_path(self.settings, topic), data, **attributes)  # type: ignore[arg-type]


def stop_on_signals() -> threading.Event:
    """An event SIGTERM or SIGINT sets (and logs): what ends a :func:`keep_pulling`
    loop in a process's main thread."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping on %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return stop


def keep_pulling(
    path: str,
    callback: Callable[[pubsub_v1.subscriber.message.Message], None],
    flow_control: pubsub_v1.types.FlowControl,
    stop: threading.Event,
    *,
    before_cancel: Callable[[], None] = lambda: None,
) -> None:
    """Streaming pull on the subscription ``path`` until ``stop`` is set; then
    ``before_cancel()`` (a drain), and the stream is cancelled: messages pulled but not
    started are handed back, and the call returns once the running callbacks are done.

    The client library reopens a stream broken for a retryable reason by itself. One it
    ends for good — NOT_FOUND while an emulator that restarted has not got its
    subscriptions back yet, a permission revoked for a moment — is logged and opened
    again after a pause (``REOPEN_FIRST_SECONDS``, doubling to ``REOPEN_MAX_SECONDS``),
    so the process outlives that moment instead of exiting with it.
    """
    failures = 0
    with pubsub_v1.SubscriberClient() as subscriber:
        while not stop.is_set():
            opened = time.monotonic()
            future = subscriber.subscribe(
                path, callback, flow_control=flow_control, await_callbacks_on_shutdown=True
            )
            while not future.done() and not stop.wait(_STOP_POLL_SECONDS):
                pass
            if stop.is_set():
                before_cancel()
                future.cancel()
                if (error := future.exception()) is not None:
                    log.warning("the pull of %s ended with an error while stopping: %s", path, error)
                return
            # A stream that lived long was no failure in a row: start the pauses again.
            failures = 1 if time.monotonic() - opened > REOPEN_MAX_SECONDS else failures + 1
            pause = min(REOPEN_FIRST_SECONDS * 2 ** (failures - 1), REOPEN_MAX_SECONDS)
            log.error(
                "the pull of %s ended (%s); opening it again in %.0f s",
                path,
                future.exception() or "no error",
                pause,
            )
            stop.wait(pause)
        before_cancel()


def ensure_topic(settings: Settings, topic: str) -> None:
    """Create ``topic`` if it does not exist."""
    with contextlib.suppress(AlreadyExists):
        publisher_client().create_topic(name=topic_path(settings, topic))


def ensure_subscription(settings: Settings, subscription: str, topic: str, ack_deadline_seconds: int) -> None:
    """Create ``subscription`` on ``topic`` if it does not exist."""
    with pubsub_v1.SubscriberClient() as subscriber, contextlib.suppress(AlreadyExists):
        subscriber.create_subscription(
            name=subscription_path(settings, subscription),
            topic=topic_path(settings, topic),
            ack_deadline_seconds=ack_deadline_seconds,
        )


def ensure_topology(settings: Settings) -> None:
    """Create the platform's topics and subscriptions (local stack and tests; Terraform
    owns them on Google Cloud)."""
    ensure_topic(settings, settings.topic_video_tasks)
    ensure_topic(settings, settings.topic_task_events)
    ensure_subscription(
        settings,
        settings.subscription_transcoder,
        settings.topic_video_tasks,
        settings.transcoder_ack_deadline_seconds,
    )
    ensure_subscription(
        settings,
        settings.subscription_notifier,
        settings.topic_task_events,
        settings.notifier_ack_deadline_seconds,
    )


def delete_topology(settings: Settings) -> None:
    """Delete the subscriptions and topics :func:`ensure_topology` creates (tests and
    throwaway stacks); missing ones are skipped."""
    with pubsub_v1.SubscriberClient() as subscriber:
        for subscription in (settings.subscription_transcoder, settings.subscription_notifier):
            with contextlib.suppress(NotFound):
                subscriber.delete_subscription(subscription=subscription_path(settings, subscription))
    for topic in (settings.topic_video_tasks, settings.topic_task_events):
        with contextlib.suppress(NotFound):
            publisher_client().delete_topic(topic=topic_path(settings, topic))
