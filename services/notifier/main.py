"""The Cloud Function: ``on_task_event`` receives a ``task-events`` message as a CloudEvent.

A ``TaskStatusChanged`` is applied to its task; a ``PartSubmitted`` (a part its planning
worker handed out) is recorded, held for its owner's room. Whenever that may have made
room for the owner's held parts and tasks, the function lets them out and publishes them
on ``video-tasks`` at once (``shared.outbox``; the api's relay publishes any it could not).

Deployed as a 2nd-gen function with an Eventarc Pub/Sub trigger (retries on), served
locally by ``functions-framework --target on_task_event --source
services/notifier/main.py --signature-type cloudevent``, and called in-process by the
local pull runner (``python -m services.notifier``). Returning acknowledges the message;
raising makes Pub/Sub deliver it again.
"""

from __future__ import annotations

import sys
from pathlib import Path

# functions-framework loads this file by path and puts only its folder on sys.path; the
# project root (where ``shared`` lives) must be importable too, here and when deployed.
_PROJECT_ROOT = str(Path(__file__).resolve().parents[2])
if _PROJECT_ROOT not in sys.path:
    sys.path.insert(0, _PROJECT_ROOT)

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import functions_framework
from cloudevents.http import CloudEvent
from sqlalchemy.engine import Engine

from services.notifier.apply import Result, apply_status_change, record_part
from shared.config import Settings
from shared.db import get_engine
from shared.events import MalformedEvent, PartSubmitted, TaskStatusChanged, decode
from shared.logging import about_task, task_logger
from shared.outbox import publish_committed, release_owner
from shared.pubsub import Publisher
from shared.startup import start_process

# A TaskStatusChanged is a few hundred bytes per clip; anything far larger is not one.
MAX_EVENT_BYTES = 256 * 1024

# The function's entry point: functions-framework (and the local runner) load this module
# first. Without its settings the engine would aim at the local default and every event
# would fail and come back forever: better not to start at all.
settings = start_process("notifier")
logger = task_logger("services.notifier")


_publisher: Publisher | None = None


def publisher() -> Publisher:
    """The instance's publisher, made on first use and reused."""
    global _publisher  # noqa: PLW0603 - one client per instance, like the engine
    if _publisher is None:
        _publisher = Publisher(settings)
    return _publisher


@functions_framework.cloud_event
def on_task_event(cloud_event: CloudEvent) -> None:
    """Apply the event in a Pub/Sub ``messagePublished`` CloudEvent.

    Malformed events are logged and dropped; database errors raise, so Pub/Sub retries.
    """
    data = cloud_event.data if isinstance(cloud_event.data, Mapping) else {}
    message = data.get("message")
    # The engine is created on the first event, once per instance, and reused.
    handle_message(get_engine(settings), message, clips_bucket=settings.clips_bucket, publisher=publisher())


def handle_message(
    engine: Engine,
    message: Any,
    *,
    clips_bucket: str,
    publisher: Publisher | None = None,
    settings: Settings = settings,
) -> Result | None:
    """Decode and apply one Pub/Sub message (Eventarc's ``message`` object), then let out
    what it made room for, through ``publisher`` (none: the api's relay lets it out).

    Returns the result, or None for a malformed message, which is logged with its
    reason and must be acknowledged: no redelivery could ever make it applicable.
    """
    message_id = message.get("messageId") if isinstance(message, Mapping) else None
    try:
        event = decode_message(message)
    except MalformedEvent as exc:
        with about_task(_claimed_task(message)):
            logger.error("dropped a malformed event: %s", exc, extra={"message_id": message_id})
        return None
    log_fields = {"event_id": event.event_id, "message_id": message_id}
    with about_task(event.task_id):
        try:
            result = apply_event(engine, event, clips_bucket=clips_bucket, settings=settings)
        except MalformedEvent as exc:
            logger.error("dropped an event that cannot apply: %s", exc, extra=log_fields)
            return None
        if result.change is None and isinstance(event, TaskStatusChanged):
            logger.info("%s %s event changed nothing", result.outcome, event.status, extra=log_fields)
        if publisher is not None:
            let_out(engine, publisher, settings, result)
    return result


def apply_event(
    engine: Engine,
    event: TaskStatusChanged | PartSubmitted,
    *,
    clips_bucket: str,
    settings: Settings = settings,
) -> Result:
    """Apply a status change, or record a part handed out (held for its owner's room)."""
    if isinstance(event, PartSubmitted):
        return record_part(engine, event, topic=settings.topic_video_tasks)
    return apply_status_change(engine, event, clips_bucket=clips_bucket)


def let_out(engine: Engine, publisher: Publisher, settings: Settings, result: Result) -> None:
    """Publish what ``result`` let out again, and the held units of the owner it made room
    for. Never raises for Pub/Sub: a row not published is the api relay's to publish; a
    database error raises, and the event comes again (applying it then changes nothing,
    and the relay lets the units out within its round)."""
    publish_committed(engine, publisher, settings, list(result.messages))
    if result.room_for is not None:
        release_owner(engine, publisher, settings, result.room_for)


def decode_message(message: Any) -> TaskStatusChanged | PartSubmitted:
    """The ``TaskStatusChanged`` or ``PartSubmitted`` in a Pub/Sub message object;
    MalformedEvent otherwise."""
    if not isinstance(message, Mapping):
        raise MalformedEvent("the CloudEvent carries no Pub/Sub message")
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise MalformedEvent("message attributes are not an object")
    encoded = message.get("data")
    if not isinstance(encoded, str) or not encoded:
        raise MalformedEvent("message has no data")
    if len(encoded) > MAX_EVENT_BYTES * 4 // 3 + 4:
        raise MalformedEvent(f"message data is larger than {MAX_EVENT_BYTES} bytes")
    try:
        body = base64.b64decode(encoded, validate=True)
    except binascii.Error as exc:
        raise MalformedEvent(f"message data is not base64: {exc}") from None
    event = decode(body, dict(attributes))
    if not isinstance(event, (TaskStatusChanged, PartSubmitted)):
        raise MalformedEvent(f"{event.event_type} does not belong on task-events")
    return event


def _claimed_task(message: Any) -> str | None:
    """The task id the attributes claim, so even a dropped event's line names its task."""
    if isinstance(message, Mapping) and isinstance(message.get("attributes"), Mapping):
        task_id = message["attributes"].get("task_id")
        if isinstance(task_id, str):
            return task_id[:64]
    return None
