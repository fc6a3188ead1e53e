"""Apply one ``TaskStatusChanged`` to the database, exactly once, in one transaction."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from services.notifier.changes import (
    Change,
    TaskState,
    check_event,
    orphaned_objects,
    own_outputs,
    plan_change,
)
from shared import storage, webhooks
from shared.config import get_settings
from shared.events import MalformedEvent, TaskStatusChanged
from shared.lifecycle import TaskStatus

logger = logging.getLogger(__name__)


class UnknownTask(MalformedEvent):
    """The event names a task the database does not hold: it can never be applied."""


class Outcome(enum.StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this event_id was handled before
    STALE = "stale"  # the row already holds this or newer news


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    change: Change | None = None
    orphans_deleted: tuple[str, ...] = ()


def apply_status_change(
    engine: Engine,
    event: TaskStatusChanged,
    *,
    clips_bucket: str,
    delete_object: Callable[[str], bool] = storage.delete_uri,
    public_base_url: str | None = None,
) -> Result:
    """Apply ``event`` to its task if it moves the task forward.

    One transaction: the event id is recorded (a redelivery finds it and changes
    nothing), the task row is locked, and the change, its clips and its history line
    are written together. Orphaned outputs of a ``processed`` event that came too late
    are deleted (only in ``clips_bucket``) before the commit, so a storage error rolls
    everything back and the redelivery tries again.

    Outputs outside the task's own folder in ``clips_bucket`` are dropped and logged
    first: they are neither recorded nor ever deleted.

    A change of status writes its webhook deliveries (:mod:`shared.webhooks`) in the same
    transaction, their links under ``public_base_url`` (default: PUBLIC_BASE_URL); a
    redelivered event finds its event id recorded and writes none again.

    Raises :class:`MalformedEvent` (or :class:`UnknownTask`) for an event that can
    never be applied; database and storage errors propagate.
    """
    check_event(event)
    outputs, refused = own_outputs(event, clips_bucket)
    if refused:
        logger.error(
            "dropped outputs outside the task's folder in the clips bucket",
            extra={"task_id": str(event.task_id), "event_id": event.event_id, "uris": refused},
        )
        event = event.model_copy(update={"outputs": outputs})
    with engine.begin() as conn:
        first_time = conn.execute(
            text(
                "INSERT INTO applied_events (event_id, task_id) VALUES (:event_id, :task_id) "
                "ON CONFLICT (event_id) DO NOTHING RETURNING event_id"
            ),
            {"event_id": event.event_id, "task_id": event.task_id},
        ).first()
        if first_time is None:
            return Result(Outcome.DUPLICATE)

        state = _lock_task(conn, event)
        change = plan_change(state, event)
        if change is None:
            orphans = orphaned_objects(state, event, _recorded_objects(conn, event))
            deleted = _delete_orphans(orphans, event, clips_bucket, delete_object)
            return Result(Outcome.STALE, orphans_deleted=deleted)

        _write_change(conn, event, change)
        if change.status_changed and change.status is not TaskStatus.QUEUED:
            base_url = get_settings().public_base_url if public_base_url is None else public_base_url
            webhooks.record_task_event(
                conn, base_url, event.task_id, f"task.{change.status}", occurred_at=change.occurred_at
            )
        return Result(Outcome.APPLIED, change=change)


def _lock_task(conn: Connection, event: TaskStatusChanged) -> TaskState:
    row = conn.execute(
        text(
            "SELECT status, progress, attempt, deleted_at IS NOT NULL AS deleted "
            "FROM tasks WHERE id = :task_id FOR UPDATE"
        ),
        {"task_id": event.task_id},
    ).first()
    if row is None:
        # Raising rolls back the applied_events row: nothing is written for it.
        raise UnknownTask(f"no task {event.task_id}")
    return TaskState(
        status=TaskStatus(row.status),
        progress=row.progress,
        attempt=row.attempt,
        deleted=row.deleted,
    )


def _recorded_objects(conn: Connection, event: TaskStatusChanged) -> set[str]:
    rows = conn.execute(
        text("SELECT uri, poster_uri FROM clips WHERE task_id = :task_id"),
        {"task_id": event.task_id},
    )
    return {uri for row in rows for uri in row if uri}


def _delete_orphans(
    uris: list[str],
    event: TaskStatusChanged,
    clips_bucket: str,
    delete_object: Callable[[str], bool],
) -> tuple[str, ...]:
    deleted = []
    for uri in uris:
        if storage.parse_gs_uri(uri)[0] != clips_bucket:
            # The notifier may delete only clips; anything else is left for an operator.
            logger.warning(
                "left an object outside the clips bucket",
                extra={"task_id": str(event.task_id), "event_id": event.event_id, "uri": uri},
            )
            continue
        delete_object(uri)
        deleted.append(uri)
    if deleted:
        logger.info(
            "deleted the outputs of a late processed event",
            extra={
                "task_id": str(event.task_id),
                "event_id": event.event_id,
                "uris": deleted,
            },
        )
    return tuple(deleted)


def _write_change(conn: Connection, event: TaskStatusChanged, change: Change) -> None:
    conn.execute(
        text(
            """
            UPDATE tasks SET
                status = :status,
                progress = :progress,
                attempt = :attempt,
                failure_reason = coalesce(:failure_reason, failure_reason),
                worker_id = coalesce(:worker_id, worker_id),
                status_changed_at = CASE WHEN :status_changed
                    THEN CAST(:occurred_at AS timestamptz) ELSE status_changed_at END,
                updated_at = now()
            WHERE id = :task_id
            """
        ),
        {
            "task_id": event.task_id,
            "status": str(change.status),
            "progress": change.progress,
            "attempt": change.attempt,
            "failure_reason": change.failure_reason,
            "worker_id": change.worker_id,
            "status_changed": change.status_changed,
            "occurred_at": change.occurred_at,
        },
    )
    if change.status is TaskStatus.PROCESSED:
        conn.execute(text("DELETE FROM clips WHERE task_id = :task_id"), {"task_id": event.task_id})
        if event.outputs:
            conn.execute(
                text(
                    "INSERT INTO clips (task_id, index, uri, poster_uri, duration_seconds, "
                    "size_bytes) VALUES (:task_id, :index, :uri, :poster_uri, "
                    ":duration_seconds, :size_bytes)"
                ),
                [{"task_id": event.task_id, **clip.model_dump()} for clip in event.outputs],
            )
    conn.execute(
        text(
            "INSERT INTO task_history (task_id, status, progress, attempt, event_id, occurred_at) "
            "VALUES (:task_id, :status, :progress, :attempt, :event_id, :occurred_at)"
        ),
        {
            "task_id": event.task_id,
            "status": str(change.status),
            "progress": change.progress,
            "attempt": change.attempt,
            "event_id": event.event_id,
            "occurred_at": change.occurred_at,
        },
    )
    logger.info(
        "applied %s",
        change.status,
        extra={
            "task_id": str(event.task_id),
            "event_id": event.event_id,
            "progress": change.progress,
            "attempt": change.attempt,
        },
    )
