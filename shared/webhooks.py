"""Webhooks shared by the api, the notifier and the dispatcher: the event types, the
endpoints' secrets (made, encrypted at rest, and signed with to the Standard Webhooks
specification), and the delivery rows an event writes in the transaction that makes it.

A delivery row holds the exact body that is sent, so every attempt, a retry or a
replay carries the same bytes under the same ``webhook-id``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Collection, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from shared import tables, taskview
from shared.config import Settings

TASK_EVENTS = (
    "task.queued",
    "task.processing",
    "task.processed",
    "task.failed",
    "task.canceled",
    "task.deleted",
)
CLIP_READY = "clip.ready"
TEST_EVENT = "webhook.test"
EVENT_TYPES = (*TASK_EVENTS, CLIP_READY)
"""What an endpoint may subscribe to (``webhook.test`` is sent on request only)."""

SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
_NONCE_BYTES = 12
# Outside production, secrets are still encrypted, under a key anyone can read here.
_LOCAL_KEY = hashlib.sha256(b"idrl local webhook secrets").digest()


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(os.urandom(_SECRET_BYTES)).decode()


def new_message_id() -> str:
    """A ``webhook-id``: unique per event, kept by every retry and replay of it."""
    return f"msg_{uuid.uuid4().hex}"


class SecretBox:
    """Encrypts the endpoints' secrets for the database (AES-256-GCM, a random nonce per
    secret, the endpoint's id as associated data so a secret copied to another row does
    not decrypt there)."""

    def __init__(self, settings: Settings) -> None:
        if settings.is_production and not settings.webhook_secret_key:
            raise ValueError("WEBHOOK_SECRET_KEY is required in production")
        key = base64.b64decode(settings.webhook_secret_key) if settings.webhook_secret_key else _LOCAL_KEY
        if len(key) != 32:
            raise ValueError("WEBHOOK_SECRET_KEY must be the base64 of 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, secret: str, endpoint_id: uuid.UUID) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), endpoint_id.bytes)

    def open(self, sealed: bytes, endpoint_id: uuid.UUID) -> str:
        return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], endpoint_id.bytes).decode()


def signature(secret: str, message_id: str, timestamp: int, body: str) -> str:
    """One ``v1,`` signature of the Standard Webhooks specification: the base64 of the
    HMAC-SHA256, keyed with the secret's bytes, of ``id.timestamp.body``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{message_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secrets: Iterable[str], message_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers, one signature per secret (space-separated)."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(signature(s, message_id, timestamp, body) for s in secrets),
    }


def event_body(event_type: str, data: Mapping[str, Any], occurred_at: datetime | None = None) -> str:
    """The JSON body of an event: ``{"type", "timestamp", "data"}``."""
    moment = (occurred_at or datetime.now(UTC)).astimezone(UTC)
    return json.dumps(
        {"type": event_type, "timestamp": moment.isoformat(), "data": dict(data)},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def enqueue(
    conn: Connection, endpoint_id: uuid.UUID, event_type: str, body: str, message_id: str
) -> uuid.UUID:
    """Write one pending delivery, due now, in the caller's transaction."""
    return conn.execute(
        insert(tables.webhook_deliveries)
        .values(
            endpoint_id=endpoint_id,
            message_id=message_id,
            event_type=event_type,
            body=body,
            next_attempt_at=func.now(),
        )
        .returning(tables.webhook_deliveries.c.id)
    ).scalar_one()


def record_task_event(
    conn: Connection,
    base_url: str,
    task_id: uuid.UUID,
    event_type: str | None,
    *,
    new_clips: Collection[tuple[int, str]] = (),
    occurred_at: datetime | None = None,
) -> int:
    """Write the deliveries of ``event_type`` about a task (None: none) and one
    ``clip.ready`` per clip of ``new_clips`` (part index and format: the clips recorded
    for the first time, so each is announced once, as soon as it is made) to each enabled
    endpoint of its owner that subscribes, in the caller's transaction: the event and its
    deliveries commit together or not at all. Links in the payload start with
    ``base_url`` (PUBLIC_BASE_URL). Returns the number of deliveries written."""
    task = taskview.load_task(conn, task_id)
    if task is None:
        return 0
    endpoints = conn.execute(
        select(tables.webhook_endpoints.c.id, tables.webhook_endpoints.c.events).where(
            tables.webhook_endpoints.c.owner_id == task.owner_id,
            tables.webhook_endpoints.c.enabled,
        )
    ).all()
    if not endpoints:
        return 0
    view = taskview.render_task(task, base_url)
    wanted = set(new_clips)
    events = [
        (CLIP_READY, event_body(CLIP_READY, {**view, "clip": clip}, occurred_at))
        for clip in view["clips"]
        if (clip["index"], clip["format"]) in wanted
    ]
    if event_type is not None:
        events.append((event_type, event_body(event_type, view, occurred_at)))
    written = 0
    for kind, body in events:
        message_id = new_message_id()
        for endpoint in endpoints:
            if kind in endpoint.events:
                enqueue(conn, endpoint.id, kind, body, message_id)
                written += 1
    return written
