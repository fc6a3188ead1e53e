"""``/webhooks``: the caller's webhook endpoints, their secrets and their delivery log.

Every route needs a bearer token and sees only the caller's endpoints: another user's
endpoint or delivery is answered exactly like a missing one. The deliveries themselves
are sent by the dispatcher (``services/dispatcher``); these routes only write rows.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from services.api import deps
from services.api.identity import current_owner
from shared import tables
from shared import webhooks as hooks
from shared.config import Settings
from shared.errors import BadRequest, Conflict, NotFound, Unauthorized, Unprocessable
from shared.urlpolicy import SourceUrlRejected, check_source_url
from shared.web import json_body

webhooks = Blueprint("webhooks", __name__, url_prefix="/webhooks")

MAX_DESCRIPTION_CHARS = 1024
DELIVERY_STATUSES = ("pending", "delivered", "failed")

E, D = tables.webhook_endpoints.c, tables.webhook_deliveries.c
_ENDPOINT_COLUMNS = (
    E.id,
    E.url,
    E.description,
    E.events,
    E.enabled,
    E.disabled_reason,
    E.created_at,
    E.updated_at,
)
_DELIVERY_COLUMNS = (
    D.id,
    D.message_id,
    D.event_type,
    D.status,
    D.attempts,
    D.last_status_code,
    D.last_error,
    D.last_response,
    D.last_latency_ms,
    D.last_attempt_at,
    D.next_attempt_at,
    D.created_at,
    D.completed_at,
)


class NewEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str
    events: list[str] | None = None  # None: every event type
    description: str = ""


class EndpointChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str | None = None
    events: list[str] | None = None
    description: str | None = None
    enabled: bool | None = None


def _settings() -> Settings:
    return deps.settings()


def _engine() -> Engine:
    return deps.engine()


def _box() -> hooks.SecretBox:
    return deps.webhook_secrets()


def _not_found(what: str = "webhook endpoint") -> NotFound:
    return NotFound(
        f"{what} not found", code="webhook_not_found" if what.startswith("webhook") else "delivery_not_found"
    )


def _id(raw: str, what: str = "webhook endpoint") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _not_found(what) from None


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).isoformat() if moment else None


def checked_url(url: str, settings: Settings) -> str:
    """The endpoint URL under the source-URL policy; https only in production (422)."""
    try:
        parsed = check_source_url(
            url, allow_loopback=settings.allow_loopback_webhooks, max_length=settings.max_url_length
        )
    except SourceUrlRejected as exc:
        raise Unprocessable(
            exc.message.replace("source URL", "webhook URL"), code="webhook_url_rejected"
        ) from None
    if settings.is_production and parsed.scheme != "https":
        raise Unprocessable("webhook URL must use https", code="webhook_url_rejected")
    return url


def _checked_events(events: list[str] | None) -> list[str]:
    if events is None:
        return list(hooks.EVENT_TYPES)
    if not events:
        raise Unprocessable(
            "events: name at least one event type (or leave it out for all)", code="invalid_field"
        )
    unknown = sorted(set(events) - set(hooks.EVENT_TYPES))
    if unknown:
        raise Unprocessable(
            f"events: unknown event type(s) {', '.join(unknown)}; known: {', '.join(hooks.EVENT_TYPES)}",
            code="unknown_event_type",
        )
    return sorted(set(events), key=hooks.EVENT_TYPES.index)


def _checked_description(description: str) -> str:
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise Unprocessable(f"description: at most {MAX_DESCRIPTION_CHARS} characters", code="invalid_field")
    return description


def endpoint_view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "url": row.url,
        "description": row.description,
        "events": list(row.events),
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "created_at": _iso(row.created_at),
        "updated_at": _iso(row.updated_at),
        "links": {
            "self": f"{_settings().public_base_url.rstrip('/')}/webhooks/{row.id}",
            "deliveries": f"{_settings().public_base_url.rstrip('/')}/webhooks/{row.id}/deliveries",
        },
    }


def delivery_view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "webhook_id": row.message_id,
        "event_type": row.event_type,
        "status": row.status,
        "attempts": row.attempts,
        "last_status_code": row.last_status_code,
        "last_error": row.last_error,
        "last_response": row.last_response,
        "latency_ms": row.last_latency_ms,
        "last_attempt_at": _iso(row.last_attempt_at),
        "next_attempt_at": _iso(row.next_attempt_at) if row.status == "pending" else None,
        "created_at": _iso(row.created_at),
        "completed_at": _iso(row.completed_at),
    }


def _owned(conn: Connection, endpoint_id: uuid.UUID, owner: uuid.UUID, *, lock: bool = False) -> Any:
    query = select(*_ENDPOINT_COLUMNS).where(E.id == endpoint_id, E.owner_id == owner)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise _not_found()
    return row


@webhooks.post("")
def create_endpoint():
    settings = _settings()
    owner = current_owner()
    body = json_body(NewEndpoint, max_bytes=settings.max_request_json_bytes)
    url = checked_url(body.url, settings)
    events = _checked_events(body.events)
    description = _checked_description(body.description)
    endpoint_id = uuid.uuid4()
    secret = hooks.new_secret()
    with _engine().begin() as conn:
        # The owner's row serializes concurrent registrations, so the cap holds.
        if (
            conn.execute(
                select(tables.users.c.id).where(tables.users.c.id == owner).with_for_update()
            ).first()
            is None
        ):
            raise Unauthorized("the token's user does not exist", code="unknown_user")
        count = conn.execute(select(func.count()).where(E.owner_id == owner)).scalar_one()
        if count >= settings.webhook_endpoints_per_user:
            raise Conflict(
                f"at most {settings.webhook_endpoints_per_user} webhook endpoints per user",
                code="too_many_webhooks",
            )
        row = conn.execute(
            insert(tables.webhook_endpoints)
            .values(
                id=endpoint_id,
                owner_id=owner,
                url=url,
                description=description,
                events=events,
                secret=_box().seal(secret, endpoint_id),
            )
            .returning(*_ENDPOINT_COLUMNS)
        ).one()
    response = jsonify(endpoint_view(row) | {"secret": secret})
    response.status_code = 201
    response.headers["Location"] = endpoint_view(row)["links"]["self"]
    return response


@webhooks.get("")
def list_endpoints():
    owner = current_owner()
    with _engine().connect() as conn:
        rows = conn.execute(
            select(*_ENDPOINT_COLUMNS).where(E.owner_id == owner).order_by(E.created_at, E.id)
        ).all()
    return {"webhooks": [endpoint_view(row) for row in rows]}


@webhooks.get("/<endpoint_id>")
def get_endpoint(endpoint_id: str):
    owner = current_owner()
    with _engine().connect() as conn:
        return endpoint_view(_owned(conn, _id(endpoint_id), owner))


@webhooks.patch("/<endpoint_id>")
def change_endpoint(endpoint_id: str):
    settings = _settings()
    owner = current_owner()
    body = json_body(EndpointChange, max_bytes=settings.max_request_json_bytes)
    values: dict[str, Any] = {}
    if body.url is not None:
        values["url"] = checked_url(body.url, settings)
    if body.events is not None:
        values["events"] = _checked_events(body.events)
    if body.description is not None:
        values["description"] = _checked_description(body.description)
    if body.enabled is not None:
        values["enabled"] = body.enabled
        # Re-enabled: its failures so far no longer count toward disabling it again.
        values["disabled_reason"] = None if body.enabled else "disabled by its owner"
        values["failing_since"] = None
    with _engine().begin() as conn:
        _owned(conn, _id(endpoint_id), owner, lock=True)
        if values:
            conn.execute(
                update(tables.webhook_endpoints)
                .where(E.id == endpoint_id)
                .values(**values, updated_at=func.now())
            )
        return endpoint_view(_owned(conn, _id(endpoint_id), owner))


@webhooks.delete("/<endpoint_id>")
def delete_endpoint(endpoint_id: str):
    owner = current_owner()
    with _engine().begin() as conn:
        _owned(conn, _id(endpoint_id), owner, lock=True)
        conn.execute(delete(tables.webhook_endpoints).where(E.id == endpoint_id))
    return Response(status=204)


@webhooks.post("/<endpoint_id>/secret")
def rotate_secret(endpoint_id: str):
    """A new secret; the old one keeps signing too for WEBHOOK_SECRET_OVERLAP_HOURS."""
    settings = _settings()
    owner = current_owner()
    target = _id(endpoint_id)
    secret = hooks.new_secret()
    until = datetime.now(UTC) + timedelta(hours=settings.webhook_secret_overlap_hours)
    with _engine().begin() as conn:
        _owned(conn, target, owner, lock=True)
        conn.execute(
            update(tables.webhook_endpoints)
            .where(E.id == target)
            .values(
                previous_secret=E.secret,
                previous_secret_until=until,
                secret=_box().seal(secret, target),
                updated_at=func.now(),
            )
        )
    return {"id": str(target), "secret": secret, "previous_secret_valid_until": _iso(until)}


@webhooks.get("/<endpoint_id>/deliveries")
def list_deliveries(endpoint_id: str):
    settings = _settings()
    owner = current_owner()
    status = request.args.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise BadRequest(f"status must be one of {', '.join(DELIVERY_STATUSES)}", code="invalid_status")
    with _engine().connect() as conn:
        _owned(conn, _id(endpoint_id), owner)
        query = select(*_DELIVERY_COLUMNS).where(D.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(D.status == status)
        rows = conn.execute(
            query.order_by(D.created_at.desc(), D.id.desc()).limit(settings.webhook_deliveries_listed)
        ).all()
    return {"deliveries": [delivery_view(row) for row in rows]}


def _accepted(conn: Connection, delivery_id: uuid.UUID) -> Response:
    row = conn.execute(select(*_DELIVERY_COLUMNS).where(D.id == delivery_id)).one()
    response = jsonify(delivery_view(row))
    response.status_code = 202
    return response


@webhooks.post("/<endpoint_id>/deliveries/<delivery_id>/replay")
def replay_delivery(endpoint_id: str, delivery_id: str):
    """Send a delivery again: a new row in the log, the same body and ``webhook-id``."""
    owner = current_owner()
    with _engine().begin() as conn:
        endpoint = _owned(conn, _id(endpoint_id), owner)
        original = conn.execute(
            select(D.message_id, D.event_type, D.body).where(
                D.id == _id(delivery_id, "delivery"), D.endpoint_id == endpoint.id
            )
        ).first()
        if original is None:
            raise _not_found("delivery")
        new_id = hooks.enqueue(conn, endpoint.id, original.event_type, original.body, original.message_id)
        return _accepted(conn, new_id)


@webhooks.post("/<endpoint_id>/test")
def send_test(endpoint_id: str):
    """Send a ``webhook.test`` event to this endpoint, whatever it subscribes to."""
    owner = current_owner()
    with _engine().begin() as conn:
        endpoint = _owned(conn, _id(endpoint_id), owner)
        body = hooks.event_body(hooks.TEST_EVENT, {"webhook": {"id": str(endpoint.id), "url": endpoint.url}})
        new_id = hooks.enqueue(conn, endpoint.id, hooks.TEST_EVENT, body, hooks.new_message_id())
        return _accepted(conn, new_id)
