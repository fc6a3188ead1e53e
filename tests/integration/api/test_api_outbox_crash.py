"""The api process dies between committing a task and publishing it; the next process
publishes it. Run under gunicorn, as in production, with a fault-injection setting."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from api_helpers import JwksServer, pull_events
from infra.local.process import ManagedProcess, free_port, http_probe
from shared.tokens import issue_token, public_jwk

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def jwks(api_key) -> Iterator[JwksServer]:
    with JwksServer() as server:
        server.keys = [public_jwk(api_key.public_key)]
        yield server


def _api_process(settings, jwks: JwksServer, log_path: Path, **overrides: str) -> tuple[ManagedProcess, str]:
    """The api under gunicorn on a free port, and its base URL."""
    port = free_port()
    env = dict(os.environ) | {
        "PYTHONPATH": str(PROJECT_ROOT),
        "ENVIRONMENT": "test",
        "DATABASE_URL": settings.database_url,
        "UPLOADS_BUCKET": settings.uploads_bucket,
        "CLIPS_BUCKET": settings.clips_bucket,
        "TOPIC_VIDEO_TASKS": settings.topic_video_tasks,
        "TOPIC_TASK_EVENTS": settings.topic_task_events,
        "AUTH_JWKS_URL": jwks.url,
    } | overrides
    process = ManagedProcess(
        "api",
        [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "1",
         "--worker-class", "gthread", "--threads", "2", "services.api:create_app()"],
        log_path=log_path, env=env, cwd=PROJECT_ROOT, stop_timeout=15,
    )
    return process, f"http://127.0.0.1:{port}"


def test_a_crash_between_commit_and_publish_loses_no_task(api_settings, engine, alice, api_key, jwks, tmp_path):
    token = issue_token(api_key, api_settings, str(alice.id))
    headers = {"Authorization": f"Bearer {token}"}

    crashing, crashing_url = _api_process(api_settings, jwks, tmp_path / "api-crashing.log",
                            FAULT_CRASH_AFTER_COMMIT="true", OUTBOX_RELAY_ENABLED="false")
    crashing.start()
    try:
        crashing.wait_ready(http_probe(f"{crashing_url}/healthz"), timeout=60)
        with pytest.raises(requests.ConnectionError):
            requests.post(f"{crashing_url}/tasks", json={"url": "https://a.example/run.mp4"},
                          headers=headers, timeout=30)
    finally:
        crashing.stop()
    assert "fault injection: exiting after the commit" in crashing.log_path.read_text()

    # The task was committed, its message was not published.
    with engine.connect() as conn:
        task = conn.execute(text("SELECT id, status FROM tasks")).one()
        outbox = conn.execute(text("SELECT published_at FROM outbox")).one()
    assert task.status == "queued" and outbox.published_at is None
    assert pull_events(api_settings, api_settings.subscription_transcoder, timeout=3) == []

    # A new api process starts; its relay publishes what the dead one could not.
    restarted, restarted_url = _api_process(api_settings, jwks, tmp_path / "api-restarted.log",
                             OUTBOX_RELAY_INTERVAL_SECONDS="0.5", OUTBOX_REPUBLISH_AFTER_SECONDS="1")
    restarted.start()
    try:
        restarted.wait_ready(http_probe(f"{restarted_url}/healthz"), timeout=60)
        events = pull_events(api_settings, api_settings.subscription_transcoder, task_id=task.id, timeout=30)
    finally:
        restarted.stop()

    assert [e.event_type for e in events] == ["TaskSubmitted"]
    assert events[0].owner_id == alice.id and events[0].task_id == uuid.UUID(str(task.id))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT published_at FROM outbox")).scalar_one() is not None
