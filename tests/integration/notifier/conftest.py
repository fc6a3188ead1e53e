"""Notifier fixtures: an engine on the test database, a user and tasks to apply events to,
and the environment a notifier process needs to reach the same database and emulators."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from services.notifier.apply import Result
from services.notifier.main import handle_message
from shared import db
from shared.config import Settings
from shared.events import TaskStatusChanged, encode

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def engine(settings: Settings):
    engine = db.create_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def owner_id(engine: Engine) -> uuid.UUID:
    user_id = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, username, email, password_hash) "
                "VALUES (:id, :username, :email, 'not-a-real-hash')"
            ),
            {"id": user_id, "username": f"athlete-{user_id.hex[:8]}",
             "email": f"{user_id.hex[:8]}@league.example"},
        )
    return user_id


@pytest.fixture
def make_task(engine: Engine, owner_id: uuid.UUID) -> Callable[..., uuid.UUID]:
    """Insert a task row as the api would; columns other than the id are overridable."""

    def make(**columns) -> uuid.UUID:
        row = {"id": uuid.uuid4(), "owner_id": owner_id, "status": "queued",
               "source_kind": "url", "source": "https://videos.league.example/run.mp4",
               "spec": json.dumps({}), "progress": 0, "attempt": 0, "deleted_at": None}
        row.update(columns)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tasks (id, owner_id, status, source_kind, source, spec, "
                    "progress, attempt, deleted_at) VALUES (:id, :owner_id, :status, "
                    ":source_kind, :source, CAST(:spec AS jsonb), :progress, :attempt, "
                    ":deleted_at)"
                ),
                row,
            )
        return row["id"]

    return make


@pytest.fixture
def deliver(engine: Engine, settings: Settings) -> Callable[..., Result | None]:
    """Hand an event to the function's message handler, as Eventarc's ``message`` object
    (the same path ``on_task_event`` takes, on the test's engine)."""

    def deliver_event(event: TaskStatusChanged | dict, *, on: Engine | None = None):
        message = event if isinstance(event, dict) else pubsub_message(event)
        return handle_message(on or engine, message, clips_bucket=settings.clips_bucket)

    return deliver_event


def pubsub_message(event: TaskStatusChanged, message_id: str = "1") -> dict:
    data, attributes = encode(event)
    return {"data": base64.b64encode(data).decode(), "attributes": attributes,
            "messageId": message_id}


@pytest.fixture
def notifier_env(settings: Settings) -> Callable[..., dict[str, str]]:
    """The environment of a notifier process that talks to the test's database, topic,
    subscription and bucket (and the emulators the test session runs)."""

    def environment(**overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(PROJECT_ROOT),
                "PYTHONUNBUFFERED": "1",
                "ENVIRONMENT": "test",
                "DATABASE_URL": settings.database_url or "",
                "GOOGLE_CLOUD_PROJECT": settings.google_cloud_project,
                "TOPIC_TASK_EVENTS": settings.topic_task_events,
                "SUBSCRIPTION_NOTIFIER": settings.subscription_notifier,
                "CLIPS_BUCKET": settings.clips_bucket,
                "LOG_LEVEL": "INFO",
            }
        )
        env.update(overrides)
        return env

    return environment
