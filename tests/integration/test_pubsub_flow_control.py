"""The local Pub/Sub fake honours a subscriber's flow control, as the real service does.

A worker pulls with ``FlowControl(max_messages=slots)``; the client library sends that
limit to the server (``max_outstanding_messages``). The real service then stops sending
on that stream, so a burst published while only one worker is connected still reaches
the second once it connects. Without this the fake pushes the whole burst to the first
stream, whose client leases it all while working on one message at a time
(infra/local/pstest/flow.go).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter

from google.cloud import pubsub_v1

from infra.local.process import wait_until

PROJECT = "idrl-flow"
BURST = 6


def _callback(name: str, received: list[tuple[str, bytes]], lock: threading.Lock, release: threading.Event):
    def handle(message) -> None:
        with lock:
            received.append((name, message.data))
        release.wait(timeout=60)
        message.ack()

    return handle


def test_a_burst_waiting_on_a_busy_subscriber_goes_to_the_one_that_connects_next(pubsub_emulator):
    suffix = uuid.uuid4().hex[:10]
    topic = pubsub_v1.PublisherClient.topic_path(PROJECT, f"flow-{suffix}")
    subscription = pubsub_v1.SubscriberClient.subscription_path(PROJECT, f"flow-{suffix}")
    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=topic)
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=10)
    received: list[tuple[str, bytes]] = []
    lock = threading.Lock()
    release = threading.Event()
    one_at_a_time = pubsub_v1.types.FlowControl(max_messages=1)
    first = subscriber.subscribe(subscription, _callback("first", received, lock, release), one_at_a_time)
    second_client = pubsub_v1.SubscriberClient()
    second = None
    try:
        for n in range(BURST):
            publisher.publish(topic, f"m{n}".encode()).result(timeout=30)
        assert wait_until(lambda: len(received) == 1, timeout=30), received
        # The first subscriber is busy with one message; the rest wait on the server.
        second = second_client.subscribe(
            subscription, _callback("second", received, lock, release), one_at_a_time
        )
        assert wait_until(lambda: any(name == "second" for name, _ in received), timeout=30), (
            f"the second subscriber got nothing while the first held one message: {received}"
        )
        with lock:
            assert [name for name, _ in received].count("first") == 1, received
        release.set()
        assert wait_until(lambda: len(received) >= BURST, timeout=60), received
        # Every message exactly once: the one held back for a busy stream kept its lease.
        assert wait_until(lambda: len(received) > BURST, timeout=3) is False, received
        counts = Counter(data for _, data in received)
        assert counts == Counter(f"m{n}".encode() for n in range(BURST)), counts
    finally:
        release.set()
        first.cancel()
        if second is not None:
            second.cancel()
        subscriber.delete_subscription(subscription=subscription)
        publisher.delete_topic(topic=topic)
        subscriber.close()
        second_client.close()
