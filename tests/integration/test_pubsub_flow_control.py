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


def test_acks_in_one_subscription_leave_the_counts_of_another_alone(pubsub_emulator):
    """The fake's ack IDs are its message IDs, the same in every subscription of a topic:
    the notifier and a tap both read ``task-events``. An ack in one subscription must not
    free (or fill) a slot of a stream in the other. When it did, a stream counted
    messages its client had long acked, and waited for the held message's next lease
    renewal (20 s) before each delivery; here six messages would take minutes."""
    suffix = uuid.uuid4().hex[:10]
    topic = pubsub_v1.PublisherClient.topic_path(PROJECT, f"shared-{suffix}")
    one_by_one = pubsub_v1.SubscriberClient.subscription_path(PROJECT, f"one-{suffix}")
    all_at_once = pubsub_v1.SubscriberClient.subscription_path(PROJECT, f"all-{suffix}")
    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=topic)
    subscriber = pubsub_v1.SubscriberClient()
    for name in (one_by_one, all_at_once):
        subscriber.create_subscription(name=name, topic=topic, ack_deadline_seconds=10)
    received: dict[str, list[bytes]] = {one_by_one: [], all_at_once: []}

    def acking(name: str):
        def handle(message) -> None:
            received[name].append(message.data)
            message.ack()

        return handle

    pulls = [
        subscriber.subscribe(one_by_one, acking(one_by_one), pubsub_v1.types.FlowControl(max_messages=1)),
        subscriber.subscribe(all_at_once, acking(all_at_once), pubsub_v1.types.FlowControl(max_messages=100)),
    ]
    try:
        for n in range(BURST):
            publisher.publish(topic, f"m{n}".encode()).result(timeout=30)
        # Well under one lease renewal: no delivery may have waited for one.
        assert wait_until(lambda: len(received[one_by_one]) >= BURST, timeout=15), received
        assert wait_until(lambda: len(received[all_at_once]) >= BURST, timeout=15), received
        for name in (one_by_one, all_at_once):
            assert Counter(received[name]) == Counter(f"m{n}".encode() for n in range(BURST)), received
    finally:
        for pull in pulls:
            pull.cancel()
        for name in (one_by_one, all_at_once):
            subscriber.delete_subscription(subscription=name)
        publisher.delete_topic(topic=topic)
        subscriber.close()
