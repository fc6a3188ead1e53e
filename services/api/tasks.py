"""Tasks in the database: every query here is scoped to the task's owner."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError

from services.api.outbox import OutboxMessage, enqueue
from shared import webhooks
from shared.config import Settings
from shared.events import ClipSpec, TaskStatusChanged, TaskSubmitted
from shared.lifecycle import ACTIVE_STATUSES, TaskStatus

_TASK_COLUMNS = """
    id, owner_id, status, source_kind, source, source_name, progress, attempt,
    failure_reason, created_at, updated_at, status_changed_at, deleted_at,
    idempotency_key, request_fingerprint
"""

_FIND_OWNED = text(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = :id AND owner_id = :owner")
_FIND_OWNED_FOR_UPDATE = text(
    f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = :id AND owner_id = :owner FOR UPDATE"
)
_CLIPS = text(
    """
    SELECT index, uri, duration_seconds, size_bytes FROM clips
    WHERE task_id = :id ORDER BY index
    """
)
LIST_OLDEST_FIRST = text(
    """
    SELECT id, status, progress, created_at, updated_at FROM tasks
    WHERE owner_id = :owner AND deleted_at IS NULL
    ORDER BY created_at, id
    LIMIT :limit
    """
)
LIST_NEWEST_FIRST = text(
    """
    SELECT id, status, progress, created_at, updated_at FROM tasks
    WHERE owner_id = :owner AND deleted_at IS NULL
    ORDER BY created_at DESC, id DESC
    LIMIT :limit
    """
)
_BY_IDEMPOTENCY_KEY = text(
    f"""
    SELECT {_TASK_COLUMNS} FROM tasks
    WHERE owner_id = :owner AND idempotency_key = :key
      AND created_at > now() - make_interval(hours => :window)
    """
)
# A key is remembered for the window only; an older task gives its key up so the
# unique index (owner, key) admits a new task under it.
_RELEASE_EXPIRED_KEY = text(
    """
    UPDATE tasks SET idempotency_key = NULL
    WHERE owner_id = :owner AND idempotency_key = :key
      AND created_at <= now() - make_interval(hours => :window)
    """
)
_INSERT = text(
    """
    INSERT INTO tasks (id, owner_id, status, source_kind, source, source_name, spec,
                       idempotency_key, request_fingerprint)
    VALUES (:id, :owner, 'queued', :source_kind, :source, :source_name,
            CAST(:spec AS jsonb), :key, :fingerprint)
    RETURNING created_at
    """
)
_HISTORY = text(
    """
    INSERT INTO task_history (task_id, status, progress, attempt, event_id, occurred_at)
    VALUES (:id, :status, :progress, :attempt, :event_id, :occurred_at)
    """
)
_CANCEL = text(
    """
    UPDATE tasks SET status = 'canceled', updated_at = now(), status_changed_at = :occurred_at
    WHERE id = :id
    """
)
_APPLIED = text(
    "INSERT INTO applied_events (event_id, task_id) VALUES (:event_id, :id) ON CONFLICT DO NOTHING"
)
_MARK_DELETED = text(
    "UPDATE tasks SET deleted_at = now(), updated_at = now() WHERE id = :id AND deleted_at IS NULL"
)


@dataclass(frozen=True)
class Clip:
    index: int
    uri: str
    duration_seconds: float
    size_bytes: int


@dataclass(frozen=True)
class Task:
    """A task as its owner sees it."""

    id: uuid.UUID
    owner_id: uuid.UUID
    status: TaskStatus
    source_kind: str
    source: str
    source_name: str | None
    progress: int
    attempt: int
    failure_reason: str | None
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    deleted_at: datetime | None
    idempotency_key: str | None
    request_fingerprint: str | None
    clips: tuple[Clip, ...] = field(default=())

    @classmethod
    def from_row(cls, row: Row[Any], clips: tuple[Clip, ...] = ()) -> Task:
        values = row._asdict()
        values["status"] = TaskStatus(values["status"])
        return cls(**values, clips=clips)


@dataclass(frozen=True)
class TaskSummary:
    """One item of the owner's list."""

    id: uuid.UUID
    status: TaskStatus
    progress: int
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class NewTask:
    """What a submission asks for, before it is stored."""

    id: uuid.UUID
    owner_id: uuid.UUID
    source_kind: str  # "url" or "upload"
    source: str  # the URL, or the gs:// URI of the upload
    source_name: str | None
    idempotency_key: str | None
    request_fingerprint: str | None


class IdempotencyKeyTaken(Exception):
    """Another request created a task under the same key first."""


class UnknownOwner(Exception):
    """The token names a user the database does not hold (e.g. a deleted account)."""


def _sqlstate(exc: DBAPIError) -> str | None:
    # pg8000 reports every server error as ProgrammingError with the fields in a dict.
    details = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    return details.get("C") if isinstance(details, dict) else None


def find_owned(
    conn: Connection, task_id: uuid.UUID, owner_id: uuid.UUID, *, with_clips: bool = True
) -> Task | None:
    """The owner's task (deleted ones too: callers decide what a deleted task means)."""
    row = conn.execute(_FIND_OWNED, {"id": task_id, "owner": owner_id}).first()
    if row is None:
        return None
    clips = tuple(Clip(**c._asdict()) for c in conn.execute(_CLIPS, {"id": task_id})) if with_clips else ()
    return Task.from_row(row, clips)


def list_owned(conn: Connection, owner_id: uuid.UUID, limit: int, *, newest_first: bool) -> list[TaskSummary]:
    """The owner's tasks that are not deleted, by creation time."""
    query = LIST_NEWEST_FIRST if newest_first else LIST_OLDEST_FIRST
    return [
        TaskSummary(row.id, TaskStatus(row.status), row.progress, row.created_at, row.updated_at)
        for row in conn.execute(query, {"owner": owner_id, "limit": limit})
    ]


def find_by_idempotency_key(
    conn: Connection, owner_id: uuid.UUID, key: str, window_hours: int
) -> Task | None:
    """The owner's task created under ``key`` within the idempotency window."""
    row = conn.execute(_BY_IDEMPOTENCY_KEY, {"owner": owner_id, "key": key, "window": window_hours}).first()
    return Task.from_row(row) if row else None


def create(conn: Connection, new: NewTask, settings: Settings) -> tuple[OutboxMessage, datetime]:
    """Store ``new`` as a queued task with its TaskSubmitted in the outbox, in the
    caller's transaction. Raises :class:`IdempotencyKeyTaken` or :class:`UnknownOwner`."""
    spec = ClipSpec()
    if new.idempotency_key is not None:
        conn.execute(
            _RELEASE_EXPIRED_KEY,
            {"owner": new.owner_id, "key": new.idempotency_key, "window": settings.idempotency_window_hours},
        )
    try:
        with conn.begin_nested():
            created_at = conn.execute(
                _INSERT,
                {
                    "id": new.id,
                    "owner": new.owner_id,
                    "source_kind": new.source_kind,
                    "source": new.source,
                    "source_name": new.source_name,
                    "spec": spec.model_dump_json(),
                    "key": new.idempotency_key,
                    "fingerprint": new.request_fingerprint,
                },
            ).scalar_one()
    except DBAPIError as exc:
        if _sqlstate(exc) == "23503":  # foreign_key_violation: no such user
            raise UnknownOwner() from None
        if _sqlstate(exc) == "23505":  # unique_violation: (owner, idempotency key)
            raise IdempotencyKeyTaken() from None
        raise
    conn.execute(
        _HISTORY,
        {
            "id": new.id,
            "status": TaskStatus.QUEUED.value,
            "progress": 0,
            "attempt": 0,
            "event_id": None,
            "occurred_at": created_at,
        },
    )
    webhooks.record_task_event(conn, settings.public_base_url, new.id, "task.queued", occurred_at=created_at)
    event = TaskSubmitted(
        task_id=new.id, owner_id=new.owner_id, source=new.source, spec=spec, submitted_at=created_at
    )
    return enqueue(conn, settings.topic_video_tasks, event), created_at


def delete(
    conn: Connection, task_id: uuid.UUID, owner_id: uuid.UUID, settings: Settings
) -> tuple[Task | None, list[OutboxMessage]]:
    """Cancel the owner's task if it is still active and mark it deleted.

    Returns the task as it was (None if the owner has no such task) and the outbox rows
    to publish (the cancellation). Deleting a deleted task changes nothing.
    """
    row = conn.execute(_FIND_OWNED_FOR_UPDATE, {"id": task_id, "owner": owner_id}).first()
    if row is None:
        return None, []
    task = Task.from_row(row)
    messages = []
    if task.deleted_at is None and task.status in ACTIVE_STATUSES:
        event = TaskStatusChanged(
            task_id=task.id,
            status=TaskStatus.CANCELED,
            attempt=task.attempt,
            progress=task.progress,
            worker_id="api",
        )
        conn.execute(_CANCEL, {"id": task.id, "occurred_at": event.occurred_at})
        conn.execute(
            _HISTORY,
            {
                "id": task.id,
                "status": event.status.value,
                "progress": event.progress,
                "attempt": event.attempt,
                "event_id": event.event_id,
                "occurred_at": event.occurred_at,
            },
        )
        # The api applied this change itself: the notifier, receiving it, skips it.
        conn.execute(_APPLIED, {"event_id": event.event_id, "id": task.id})
        messages.append(enqueue(conn, settings.topic_task_events, event))
        webhooks.record_task_event(
            conn, settings.public_base_url, task.id, "task.canceled", occurred_at=event.occurred_at
        )
    if task.deleted_at is None:
        conn.execute(_MARK_DELETED, {"id": task.id})
        webhooks.record_task_event(conn, settings.public_base_url, task.id, "task.deleted")
    return task, messages
