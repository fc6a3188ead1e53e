"""Tasks in the database: every query here is scoped to the task's owner."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Interval, and_, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import DBAPIError

from shared import db, webhooks
from shared.config import Settings
from shared.errors import Conflict
from shared.events import ClipSpec, TaskStatusChanged, TaskSubmitted
from shared.lifecycle import ACTIVE_STATUSES, TaskStatus
from shared.outbox import OutboxMessage, enqueue, in_flight, lock_owner, withdraw_units
from shared.tables import TASK_CLIPS, applied_events, clips, task_history, tasks

_TASK_COLUMNS = (
    tasks.c.id,
    tasks.c.owner_id,
    tasks.c.status,
    tasks.c.source_kind,
    tasks.c.source,
    tasks.c.source_name,
    tasks.c.progress,
    tasks.c.attempt,
    tasks.c.failure_reason,
    tasks.c.created_at,
    tasks.c.updated_at,
    tasks.c.status_changed_at,
    tasks.c.deleted_at,
    tasks.c.idempotency_key,
    tasks.c.request_fingerprint,
    tasks.c.spec,
    tasks.c.clips_total,
    tasks.c.dispatched_at,
)
_OWNER = bindparam("owner", type_=tasks.c.owner_id.type)

_FIND_OWNED = select(*_TASK_COLUMNS).where(tasks.c.id == bindparam("id"), tasks.c.owner_id == _OWNER)
_FIND_OWNED_FOR_UPDATE = _FIND_OWNED.with_for_update()
# The owner's list reads the index tasks_owner_created_idx (owner, created_at, id) in
# either direction.
_LIST = (
    select(tasks.c.id, tasks.c.status, tasks.c.progress, tasks.c.created_at, tasks.c.updated_at)
    .where(tasks.c.owner_id == _OWNER, tasks.c.deleted_at.is_(None))
    .limit(bindparam("limit"))
)
LIST_OLDEST_FIRST = _LIST.order_by(tasks.c.created_at, tasks.c.id)
LIST_NEWEST_FIRST = _LIST.order_by(tasks.c.created_at.desc(), tasks.c.id.desc())
_KEY_MATCHES = and_(tasks.c.owner_id == _OWNER, tasks.c.idempotency_key == bindparam("key"))
# The idempotency window, as an interval.
_WINDOW_START = func.now() - bindparam("window", type_=Interval)
_BY_IDEMPOTENCY_KEY = select(*_TASK_COLUMNS).where(_KEY_MATCHES, tasks.c.created_at > _WINDOW_START)
# A key is remembered for the window only; an older task gives its key up so the
# unique index (owner, key) admits a new task under it.
_RELEASE_EXPIRED_KEY = (
    update(tasks).where(_KEY_MATCHES, tasks.c.created_at <= _WINDOW_START).values(idempotency_key=None)
)
_INSERT = insert(tasks).returning(tasks.c.created_at)
# What the owner keeps in storage: the originals and the clips of tasks not deleted.
_clip_task = tasks.alias("ct")
_CLIP_BYTES = (
    select(func.sum(clips.c.size_bytes))
    .join_from(clips, _clip_task, _clip_task.c.id == clips.c.task_id)
    .where(_clip_task.c.owner_id == _OWNER, _clip_task.c.deleted_at.is_(None))
    .scalar_subquery()
)
_STORED_BYTES = select(
    func.coalesce(func.sum(tasks.c.source_bytes), 0) + func.coalesce(_CLIP_BYTES, 0)
).where(tasks.c.owner_id == _OWNER, tasks.c.deleted_at.is_(None))
_HISTORY = insert(task_history)
_CANCEL = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"))
    .values(status=TaskStatus.CANCELED, updated_at=func.now(), status_changed_at=bindparam("occurred_at"))
)
_APPLIED = insert(applied_events).on_conflict_do_nothing()
_MARK_DELETED = (
    update(tasks)
    .where(tasks.c.id == bindparam("task_id"), tasks.c.deleted_at.is_(None))
    .values(deleted_at=func.now(), updated_at=func.now())
)


@dataclass(frozen=True)
class Clip:
    index: int
    format: str
    uri: str
    duration_seconds: float
    size_bytes: int
    poster_uri: str | None
    preview_uri: str | None


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
    spec: dict[str, Any]  # the ClipSpec in force, as stored
    clips_total: int | None  # the plan's parts, once a worker made it
    dispatched_at: datetime | None  # let out to the workers (None: held for a slot of its owner)
    clips: tuple[Clip, ...] = field(default=())

    @classmethod
    def from_row(cls, row: Row[*tuple[Any, ...]], clips: tuple[Clip, ...] = ()) -> Task:
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
    spec: ClipSpec  # what the clips are made like (:mod:`services.api.options`)
    source_bytes: int | None = None  # an upload's size; None for a URL


@dataclass(frozen=True)
class Created:
    """A stored task: its TaskSubmitted row, and whether it was dispatched at once
    (False: it is held until one of its owner's in-flight slots frees)."""

    message: OutboxMessage
    created_at: datetime
    dispatched: bool


class IdempotencyKeyTaken(Exception):
    """Another request created a task under the same key first."""


class UnknownOwner(Exception):
    """The token names a user the database does not hold (e.g. a deleted account)."""


class StorageQuotaExceeded(Exception):
    """The owner's stored bytes would pass ``max_stored_bytes_per_user``."""

    def __init__(self, stored: int, adding: int, quota: int) -> None:
        super().__init__(f"{stored} bytes stored + {adding} > {quota}")
        self.stored, self.adding, self.quota = stored, adding, quota


def quota_exceeded(exc: StorageQuotaExceeded) -> Conflict:
    """The answer to a submission or an upload past the owner's stored-bytes quota."""
    return Conflict(
        f"your stored files take {exc.stored} of your {exc.quota} bytes"
        + (f" and this upload adds {exc.adding}" if exc.adding else "")
        + "; delete tasks to make room",
        code="storage_quota_exceeded",
    )


def find_owned(
    conn: Connection, task_id: uuid.UUID, owner_id: uuid.UUID, *, with_clips: bool = True
) -> Task | None:
    """The owner's task (deleted ones too: callers decide what a deleted task means)."""
    row = conn.execute(_FIND_OWNED, {"id": task_id, "owner": owner_id}).first()
    if row is None:
        return None
    clips = (
        tuple(Clip(**c._asdict()) for c in conn.execute(TASK_CLIPS, {"id": task_id})) if with_clips else ()
    )
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
    window = timedelta(hours=window_hours)
    row = conn.execute(_BY_IDEMPOTENCY_KEY, {"owner": owner_id, "key": key, "window": window}).first()
    return Task.from_row(row) if row else None


def stored_bytes(conn: Connection, owner_id: uuid.UUID) -> int:
    """The bytes the owner keeps in storage: originals and clips of tasks not deleted."""
    return int(conn.execute(_STORED_BYTES, {"owner": owner_id}).scalar_one())


def check_quota(stored: int, adding: int, quota: int) -> None:
    """Raise :class:`StorageQuotaExceeded` unless ``adding`` bytes fit beside ``stored``
    (an owner already at the quota may add nothing, not even a URL task's clips)."""
    if stored >= quota or stored + adding > quota:
        raise StorageQuotaExceeded(stored, adding, quota)


def create(conn: Connection, new: NewTask, settings: Settings) -> Created:
    """Store ``new`` as a queued task with its TaskSubmitted in the outbox, in the
    caller's transaction; dispatched at once if its owner has a free in-flight slot.

    The owner's row is locked first, so the quota and the slots are decided for one
    submission of that owner at a time. Raises :class:`IdempotencyKeyTaken`,
    :class:`UnknownOwner` or :class:`StorageQuotaExceeded`.
    """
    spec = new.spec
    if not lock_owner(conn, new.owner_id):
        raise UnknownOwner()
    check_quota(stored_bytes(conn, new.owner_id), new.source_bytes or 0, settings.max_stored_bytes_per_user)
    dispatch = in_flight(conn, new.owner_id) < settings.max_parts_in_flight_per_user
    if new.idempotency_key is not None:
        conn.execute(
            _RELEASE_EXPIRED_KEY,
            {
                "owner": new.owner_id,
                "key": new.idempotency_key,
                "window": timedelta(hours=settings.idempotency_window_hours),
            },
        )
    try:
        with conn.begin_nested():
            created_at = conn.execute(
                _INSERT.values(
                    id=new.id,
                    owner_id=new.owner_id,
                    status=TaskStatus.QUEUED,
                    source_kind=new.source_kind,
                    source=new.source,
                    source_name=new.source_name,
                    spec=spec.model_dump(mode="json"),
                    idempotency_key=new.idempotency_key,
                    request_fingerprint=new.request_fingerprint,
                    source_bytes=new.source_bytes,
                    dispatched_at=func.now() if dispatch else None,
                )
            ).scalar_one()
    except DBAPIError as exc:
        if db.sqlstate(exc) == "23503":  # foreign_key_violation: no such user
            raise UnknownOwner() from None
        if db.sqlstate(exc) == "23505":  # unique_violation: (owner, idempotency key)
            raise IdempotencyKeyTaken() from None
        raise
    conn.execute(
        _HISTORY,
        {
            "task_id": new.id,
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
    return Created(enqueue(conn, settings.topic_video_tasks, event), created_at, dispatch)


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
        conn.execute(_CANCEL, {"task_id": task.id, "occurred_at": event.occurred_at})
        conn.execute(
            _HISTORY,
            {
                "task_id": task.id,
                "status": event.status.value,
                "progress": event.progress,
                "attempt": event.attempt,
                "event_id": event.event_id,
                "occurred_at": event.occurred_at,
            },
        )
        # The api applied this change itself: the notifier, receiving it, skips it.
        conn.execute(_APPLIED, {"event_id": event.event_id, "task_id": task.id})
        messages.append(enqueue(conn, settings.topic_task_events, event))
        # A held task, or its held parts, were never published: now they never will be.
        withdraw_units(conn, task.id)
        webhooks.record_task_event(
            conn, settings.public_base_url, task.id, "task.canceled", occurred_at=event.occurred_at
        )
    if task.deleted_at is None:
        conn.execute(_MARK_DELETED, {"task_id": task.id})
        webhooks.record_task_event(conn, settings.public_base_url, task.id, "task.deleted")
    return task, messages
