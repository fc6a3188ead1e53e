"""A streaming pull outlives its subscription's absence (shared.pubsub.keep_pulling).

The emulator restarts empty (pstest keeps nothing); the client library reconnects, gets
NOT_FOUND because the subscription is not back yet, and ends the stream for good. The
pull must log that, open the stream again after a pause, and receive what is published
once the subscription exists again; a stop still ends it promptly. Its own pstest: the
session's emulator is not restarted under other tests.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import pubsub_v1

from infra.local import StackConfig, free_port, start_pubsub
from infra.local.process import wait_until
from shared import pubsub

PROJECT = "idrl-reopen"


class Emulator:
    """A pstest that can be restarted on its port, empty."""

    def __init__(self, state_dir: Path) -> None:
        self.config = StackConfig(state_dir=state_dir, pubsub_port=free_port())
        self.host, self.process = start_pubsub(self.config, "pstest")

    def restart(self) -> None:
        self.process.stop()
        host, self.process = start_pubsub(self.config, "pstest")
        assert host == self.host

    def provision(self, topic: str, subscription: str) -> None:
        pubsub_v1.PublisherClient().create_topic(name=topic)
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.create_subscription(name=subscription, topic=topic)


@pytest.fixture
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulator]:
    running = Emulator(tmp_path)
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", running.host)
    try:
        yield running
    finally:
        running.process.stop()


def test_a_pull_ended_by_not_found_is_opened_again_and_receives(emulator, caplog, monkeypatch):
    monkeypatch.setattr(pubsub, "REOPEN_FIRST_SECONDS", 0.5)
    topic = pubsub_v1.PublisherClient.topic_path(PROJECT, "reopen")
    subscription = pubsub_v1.SubscriberClient.subscription_path(PROJECT, "reopen-sub")
    emulator.provision(topic, subscription)
    received: list[bytes] = []

    def callback(message) -> None:
        received.append(message.data)
        message.ack()

    stop = threading.Event()
    drained = threading.Event()
    puller = threading.Thread(
        target=pubsub.keep_pulling,
        args=(subscription, callback, pubsub_v1.types.FlowControl(max_messages=1), stop),
        kwargs={"before_cancel": drained.set},
        daemon=True,
    )
    caplog.set_level(logging.ERROR, logger="shared.events")
    puller.start()
    try:
        publisher = pubsub_v1.PublisherClient()
        publisher.publish(topic, b"before").result(timeout=30)
        assert wait_until(lambda: received == [b"before"], timeout=30), received

        emulator.restart()  # empty: no topic, no subscription
        # The stream ends with NOT_FOUND and is opened again (over and over, until the
        # subscription is back).
        assert wait_until(lambda: "opening it again" in caplog.text, timeout=60), caplog.text
        assert "NotFound" in caplog.text or "404" in caplog.text, caplog.text
        assert puller.is_alive()

        emulator.provision(topic, subscription)
        pubsub_v1.PublisherClient().publish(topic, b"after").result(timeout=30)
        assert wait_until(lambda: received == [b"before", b"after"], timeout=60), received
    finally:
        stop.set()
        puller.join(timeout=30)
    assert not puller.is_alive()
    assert drained.is_set()
