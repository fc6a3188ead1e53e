"""Apply one ``TaskStatusChanged`` to the database, or record one ``PartSubmitted``,
exactly once, in one transaction."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import case, delete, exists, func, null, select, true, tuple_, update
from sqlalchemy.dialects.postgresql import insert
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
from shared.events import MalformedEvent, PartSubmitted, TaskStatusChanged
from shared.lifecycle import ACTIVE_STATUSES, TaskStatus
from shared.logging import about_task, task_logger
from shared.outbox import OutboxMessage, enqueue, withdraw_units
from shared.tables import applied_events, clips, task_history, task_parts, tasks

logger = task_logger(__name__)

ClipKey = tuple[int, str]  # a clip's part index and format


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
    # The task's owner, when what was written may have made room for the owner's held
    # units (a part made, a part recorded, the task ended): the caller lets them out.
    room_for: uuid.UUID | None = None
    # Outbox rows written that may go out at once (a part let out again).
    messages: tuple[OutboxMessage, ...] = ()


def apply_status_change(
    engine: Engine,
    event: TaskStatusChanged,
    *,
    clips_bucket: str,
    delete_object: Callable[[str], bool] | None = None,
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

    ``delete_object`` deletes one ``gs://`` object (by default through the notifier's
    storage client, made once per instance).

    An event about one part of a task made across the fleet (``part``) first records that
    part's attempt; the task row is then changed as by any event, at the task's attempt.

    A change of status writes its webhook deliveries (:mod:`shared.webhooks`) in the same
    transaction, their links under ``public_base_url`` (default: PUBLIC_BASE_URL); a
    redelivered event finds its event id recorded and writes none again.

    Raises :class:`MalformedEvent` (or :class:`UnknownTask`) for an event that can
    never be applied; database and storage errors propagate. Every line logged on the
    way names the event's task.
    """
    with about_task(event.task_id):
        return _apply(engine, event, clips_bucket, delete_object or _delete_uri, public_base_url)


def _apply(
    engine: Engine,
    event: TaskStatusChanged,
    clips_bucket: str,
    delete_object: Callable[[str], bool],
    public_base_url: str | None,
) -> Result:
    check_event(event)
    outputs, refused = own_outputs(event, clips_bucket)
    if refused:
        logger.error(
            "dropped outputs outside the task's folder in the clips bucket",
            extra={"event_id": event.event_id, "uris": refused},
        )
        event = event.model_copy(update={"outputs": outputs})
    with engine.begin() as conn:
        if not _first_time(conn, event):
            return Result(Outcome.DUPLICATE)

        state, owner_id = _lock_task(conn, event.task_id)
        if event.part is not None:
            _record_part_attempt(conn, event)
            # A part counts its own attempts; the task's attempt is its planning worker's.
            event = event.model_copy(update={"attempt": state.attempt})
        change = plan_change(state, event)
        if change is None:
            orphans = orphaned_objects(state, event, _recorded_objects(conn, event))
            deleted = _delete_orphans(orphans, event, clips_bucket, delete_object)
            return Result(Outcome.STALE, orphans_deleted=deleted)

        new_clips, parts_made = _write_change(conn, event, change)
        ended = change.status not in ACTIVE_STATUSES
        if ended:
            # Held parts of a task that ended never go out.
            withdraw_units(conn, event.task_id)
        announced = change.status_changed and change.status is not TaskStatus.QUEUED
        if announced or new_clips:
            base_url = get_settings().public_base_url if public_base_url is None else public_base_url
            webhooks.record_task_event(
                conn,
                base_url,
                event.task_id,
                f"task.{change.status}" if announced else None,
                new_clips=new_clips,
                occurred_at=change.occurred_at,
            )
        room = ended or parts_made > 0
        return Result(Outcome.APPLIED, change=change, room_for=owner_id if room else None)


def record_part(engine: Engine, event: PartSubmitted, *, topic: str) -> Result:
    """Record a part its planning worker handed out, and write its ``PartSubmitted`` to
    the outbox for ``topic`` (``video-tasks``), in one transaction.

    The part is held (``dispatched_at`` NULL) until its owner has room: the result names
    the owner, and the caller lets the owner's held units out (``shared.outbox``). A part
    its planning worker makes in place (``in_place``) is recorded let out and started
    (attempt 1, the planner's run), made if its clips are recorded already (the events
    may come in any order), and is never written to the outbox. A
    part handed out again (the task's message came back) that was let out and is not
    made goes out again at once, in case its message was lost; one held, or made, does
    not. A part of a task that ended, or was deleted, is not recorded. Raises
    :class:`MalformedEvent` for an event that can never apply.
    """
    with about_task(event.task_id), engine.begin() as conn:
        if not _first_time(conn, event):
            return Result(Outcome.DUPLICATE)
        state, owner_id = _lock_task(conn, event.task_id)
        if owner_id != event.owner_id:
            raise MalformedEvent("the part names an owner that is not its task's")
        if state.deleted or state.status not in ACTIVE_STATUSES:
            logger.info("part %d of a task that ended: not handed out", event.index)
            return Result(Outcome.STALE)
        values: dict[str, object] = {"task_id": event.task_id, "index": event.index, "attempt": 0}
        if event.in_place:
            made = exists().where(clips.c.task_id == event.task_id, clips.c.index == event.index)
            values |= {
                "attempt": 1,
                "dispatched_at": func.now(),
                "made_at": case((made, func.now()), else_=null()),
            }
        recorded = conn.execute(
            insert(task_parts)
            .values(values)
            .on_conflict_do_nothing(constraint="task_parts_pkey")
            .returning(task_parts.c.index)
        ).first()
        if event.in_place:
            if recorded is None:
                return Result(Outcome.STALE)  # its start came first, and recorded it started
            logger.info("part %d of %d made in place by its planning worker", event.index, event.parts_total)
            return Result(Outcome.APPLIED, room_for=owner_id)
        if recorded is not None:
            enqueue(conn, topic, event)
            logger.info("part %d of %d handed out", event.index, event.parts_total)
            return Result(Outcome.APPLIED, room_for=owner_id)
        part = conn.execute(
            select(task_parts.c.dispatched_at, task_parts.c.made_at).where(
                task_parts.c.task_id == event.task_id, task_parts.c.index == event.index
            )
        ).one()
        if part.dispatched_at is None or part.made_at is not None:
            return Result(Outcome.STALE)
        logger.info("part %d handed out again: it goes out again", event.index)
        return Result(Outcome.APPLIED, messages=(enqueue(conn, topic, event),))


def _first_time(conn: Connection, event: TaskStatusChanged | PartSubmitted) -> bool:
    """Record the event's id; False if it was handled before (a redelivery)."""
    recorded = conn.execute(
        insert(applied_events)
        .values(event_id=event.event_id, task_id=event.task_id)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(applied_events.c.event_id)
    ).first()
    return recorded is not None


def _lock_task(conn: Connection, task_id: uuid.UUID) -> tuple[TaskState, uuid.UUID]:
    """The task's state and owner, its row locked until the transaction ends."""
    row = conn.execute(
        select(
            tasks.c.status,
            tasks.c.progress,
            tasks.c.attempt,
            tasks.c.deleted_at.is_not(None).label("deleted"),
            tasks.c.clips_total,
            tasks.c.owner_id,
        )
        .where(tasks.c.id == task_id)
        .with_for_update()
    ).first()
    if row is None:
        # Raising rolls back the applied_events row: nothing is written for it.
        raise UnknownTask(f"no task {task_id}")
    state = TaskState(
        status=TaskStatus(row.status),
        progress=row.progress,
        attempt=row.attempt,
        deleted=row.deleted,
        clips_total=row.clips_total,
    )
    return state, row.owner_id


def _record_part_attempt(conn: Connection, event: TaskStatusChanged) -> None:
    """Keep the highest attempt the part's events announced (a late one never lowers it).
    A part's row is written when it is handed out; one missing was let out before rows
    were held (migration 0010), so a row written here counts as let out."""
    upsert = insert(task_parts).values(
        task_id=event.task_id, index=event.part, attempt=event.attempt, dispatched_at=func.now()
    )
    conn.execute(
        upsert.on_conflict_do_update(
            constraint="task_parts_pkey",
            set_={
                "attempt": func.greatest(task_parts.c.attempt, upsert.excluded.attempt),
                "updated_at": func.now(),
            },
        )
    )


def _delete_uri(uri: str) -> bool:
    return storage.delete_uri(storage.storage_client(), uri)


def _recorded_objects(conn: Connection, event: TaskStatusChanged) -> set[str]:
    rows = conn.execute(
        select(clips.c.uri, clips.c.poster_uri, clips.c.preview_uri).where(clips.c.task_id == event.task_id)
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
                extra={"event_id": event.event_id, "uri": uri},
            )
            continue
        delete_object(uri)
        deleted.append(uri)
    if deleted:
        logger.info(
            "deleted the outputs of a late processed event",
            extra={
                "event_id": event.event_id,
                "uris": deleted,
            },
        )
    return tuple(deleted)


def _write_change(conn: Connection, event: TaskStatusChanged, change: Change) -> tuple[list[ClipKey], int]:
    """Write the change, its clips and its history line; the clips recorded for the
    first time (each announced once, as ``clip.ready``), and how many of the task's
    handed-out parts are made now."""
    values: dict[str, object] = {
        "status": str(change.status),
        "progress": change.progress,
        "attempt": change.attempt,
        "updated_at": func.now(),
    }
    # A change without a failure reason, a worker or a count keeps the ones the row has.
    if change.failure_reason is not None:
        values["failure_reason"] = change.failure_reason
    if change.worker_id is not None:
        values["worker_id"] = change.worker_id
    if change.clips_total is not None:
        values["clips_total"] = change.clips_total
    if change.status is TaskStatus.PROCESSED:
        # The plan's parts are the clips the processed event names.
        values["clips_total"] = len({clip.index for clip in event.outputs})
    if change.status_changed:
        values["status_changed_at"] = change.occurred_at
    conn.execute(update(tasks).where(tasks.c.id == event.task_id).values(values))
    new_clips = _record_clips(conn, event, complete=change.status is TaskStatus.PROCESSED)
    parts_made = 0
    if event.outputs:
        parts_made = conn.execute(
            update(task_parts)
            .where(
                task_parts.c.task_id == event.task_id,
                task_parts.c.index.in_({clip.index for clip in event.outputs}),
                task_parts.c.made_at.is_(None),
            )
            .values(made_at=func.now())
        ).rowcount
    conn.execute(
        insert(task_history).values(
            task_id=event.task_id,
            status=str(change.status),
            progress=change.progress,
            attempt=change.attempt,
            event_id=event.event_id,
            occurred_at=change.occurred_at,
        )
    )
    logger.info(
        "applied %s",
        change.status,
        extra={
            "event_id": event.event_id,
            "progress": change.progress,
            "attempt": change.attempt,
            "clips_recorded": len(event.outputs),
        },
    )
    return new_clips, parts_made


def _record_clips(conn: Connection, event: TaskStatusChanged, *, complete: bool) -> list[ClipKey]:
    """Insert or refresh the event's clips; with ``complete`` (a processed event, which
    names every clip) drop the rows it does not name. Returns the keys new to the task."""
    if not event.outputs and not complete:
        return []  # a progress event: nothing to read or write
    key = (clips.c.index, clips.c.format)
    rows = conn.execute(select(*key).where(clips.c.task_id == event.task_id))
    before: set[ClipKey] = {(index, clip_format) for index, clip_format in rows}
    named = [(clip.index, clip.format) for clip in event.outputs]
    if complete:
        conn.execute(
            delete(clips).where(
                clips.c.task_id == event.task_id,
                tuple_(*key).not_in(named) if named else true(),
            )
        )
    if event.outputs:
        upsert = insert(clips).values(
            [{"task_id": event.task_id, **clip.model_dump()} for clip in event.outputs]
        )
        refreshed = {
            name: upsert.excluded[name]
            for name in ("uri", "poster_uri", "preview_uri", "duration_seconds", "size_bytes")
        }
        conn.execute(upsert.on_conflict_do_update(constraint="clips_pkey", set_=refreshed))
    return [name for name in named if name not in before]
