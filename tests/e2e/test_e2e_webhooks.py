"""Webhooks through the whole local stack: an endpoint registered through the gateway,
a video processed by the worker, and every event delivered by the stack's dispatcher to
a loopback receiver that verifies each one with the ``standardwebhooks`` library."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.client import PlatformClient
from tests.support.webhooks import Receiver

pytestmark = pytest.mark.e2e


def test_a_processed_video_and_its_clips_reach_the_endpoint(local_stack, source_server, two_part_source):
    athlete = PlatformClient.sign_up(local_stack.base_url)
    stranger = PlatformClient.sign_up(local_stack.base_url)
    with Receiver() as receiver:
        created = athlete.session.post(athlete.url("/webhooks"), json={"url": receiver.url}, timeout=30)
        assert created.status_code == 201, created.text
        endpoint = created.json()
        receiver.secrets = [endpoint["secret"]]
        assert stranger.get("/webhooks").json() == {"webhooks": []}
        assert stranger.get(f"/webhooks/{endpoint['id']}").status_code == 404

        task = athlete.submit_url(source_server.url(two_part_source))
        done = athlete.wait_for(task["id"])
        assert done["status"] == "processed"
        assert receiver.wait_for(lambda got: len(got) >= 5, timeout=60)
        # The dispatcher records an answer just after the receiver sent it.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            deliveries = athlete.get(f"/webhooks/{endpoint['id']}/deliveries").json()["deliveries"]
            if {d["status"] for d in deliveries} == {"delivered"}:
                break
            time.sleep(0.2)
    kinds = sorted(json.loads(r.body)["type"] for r in receiver.received)
    assert kinds == ["clip.ready", "clip.ready", "task.processed", "task.processing", "task.queued"]
    assert all(r.verified for r in receiver.received)
    processed = next(json.loads(r.body) for r in receiver.received if b'"task.processed"' in r.body)
    assert processed["data"]["clips"] == done["clips"]
    assert {d["status"] for d in deliveries} == {"delivered"} and len(deliveries) == 5
