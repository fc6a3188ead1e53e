"""The api process dies between committing a task and publishing it; the next process
publishes it. Run under gunicorn, as in production, with a fault-injection setting."""

from __future__ import annotations

import uuid

import pytest
import requests
from sqlalchemy import select

from infra.local.process import http_probe
from shared.tables import outbox, tasks
from shared.tokens import issue_token
from tests.support.api import api_process, pull_events
from tests.support.worker import wait_for


def test_a_crash_between_commit_and_publish_loses_no_task(
    api_settings, engine, alice, api_key, jwks, tmp_path
):
    token = issue_token(api_key, api_settings, str(alice.id))
    headers = {"Authorization": f"Bearer {token}"}

    crashing, crashing_url = api_process(
        api_settings,
        jwks,
        tmp_path / "api-crashing.log",
        FAULT_CRASH_AFTER_COMMIT="true",
        OUTBOX_RELAY_ENABLED="false",
    )
    crashing.start()
    try:
        crashing.wait_ready(http_probe(f"{crashing_url}/healthz"), timeout=60)
        with pytest.raises(requests.ConnectionError):
            requests.post(
                f"{crashing_url}/tasks",
                json={"url": "https://a.example/run.mp4"},
                headers=headers,
                timeout=30,
            )
    finally:
        crashing.stop()
    assert "fault injection: exiting after the commit" in crashing.log_path.read_text()

    # The task was committed, its message was not published.
    with engine.connect() as conn:
        task = conn.execute(select(tasks.c.id, tasks.c.status)).one()
    assert task.status == "queued" and _published_at(engine) is None
    assert pull_events(api_settings, api_settings.subscription_transcoder, timeout=3) == []

    # A new api process starts; its relay publishes what the dead one could not.
    restarted, restarted_url = api_process(
        api_settings,
        jwks,
        tmp_path / "api-restarted.log",
        OUTBOX_RELAY_INTERVAL_SECONDS="0.5",
        OUTBOX_REPUBLISH_AFTER_SECONDS="1",
    )
    restarted.start()
    try:
        restarted.wait_ready(http_probe(f"{restarted_url}/healthz"), timeout=60)
        events = pull_events(api_settings, api_settings.subscription_transcoder, task_id=task.id, timeout=30)
        # The relay marks the row once Pub/Sub has confirmed the publish, which can be
        # after the message is already pulled here.
        wait_for(lambda: _published_at(engine), timeout=30, what="the outbox row marked published")
    finally:
        restarted.stop()

    assert [e.event_type for e in events] == ["TaskSubmitted"]
    assert events[0].owner_id == alice.id and events[0].task_id == uuid.UUID(str(task.id))


def _published_at(engine):
    with engine.connect() as conn:
        return conn.execute(select(outbox.c.published_at)).scalar_one()
