"""What the tests write to and read from the platform's database, with the Core tables
of ``shared/tables.py``: users and tasks made as the services make them, resumable
uploads made to expire, and the rows the worker and the notifier leave behind (a task,
its clips, its status history, the events applied)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Engine

from shared.tables import applied_events as applied_events_table
from shared.tables import clips, task_history, task_parts, tasks, tus_uploads, users

# What a clip row holds besides its task: the columns ``clip_rows`` reads unless told.
CLIP_COLUMNS = ("index", "uri", "duration_seconds", "size_bytes")


# --- rows the tests make -----------------------------------------------------------------------


def insert_user(
    engine: Engine, user_id: uuid.UUID | None = None, *, username: str | None = None
) -> uuid.UUID:
    """A user row with a password hash nobody can log in with (for tests that sign
    their own tokens or only need an owner for tasks)."""
    user_id = user_id or uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            insert(users).values(
                id=user_id,
                username=username or f"athlete-{user_id.hex[:12]}",
                email=f"{user_id.hex[:12]}@league.example",
                password_hash="not-a-real-hash",
            )
        )
    return user_id


def cancel_task(engine: Engine, task_id: uuid.UUID) -> None:
    """What DELETE /tasks/<id> does to the row (the api's side of a cancellation)."""
    with engine.begin() as conn:
        conn.execute(
            update(tasks).where(tasks.c.id == task_id).values(status="canceled", deleted_at=func.now())
        )


def expire_uploads(engine: Engine, *upload_ids: uuid.UUID | str) -> None:
    """Make the resumable uploads ``upload_ids`` (every one when none is given) expired
    a second ago, so the next request finds them gone and the next sweep removes them."""
    query = update(tus_uploads).values(expires_at=func.now() - timedelta(seconds=1))
    if upload_ids:
        query = query.where(tus_uploads.c.id.in_(upload_ids))
    with engine.begin() as conn:
        conn.execute(query)


# --- rows the services leave -------------------------------------------------------------------


def task_row(engine: Engine, task_id: uuid.UUID | str, *, with_clips: bool = False) -> dict[str, Any]:
    """The task's row, every column by name; ``with_clips`` adds ``"clips"``: its clips'
    ``(index, uri)`` pairs in index order."""
    with engine.connect() as conn:
        row = dict(conn.execute(select(tasks).where(tasks.c.id == task_id)).mappings().one())
    if with_clips:
        row["clips"] = [(clip["index"], clip["uri"]) for clip in clip_rows(engine, task_id, "index", "uri")]
    return row


def clip_rows(engine: Engine, task_id: uuid.UUID | str, *columns: str) -> list[dict[str, Any]]:
    """The task's clip rows in index order, each with ``columns`` (by default
    :data:`CLIP_COLUMNS`)."""
    wanted = [clips.c[name] for name in columns or CLIP_COLUMNS]
    with engine.connect() as conn:
        rows = conn.execute(select(*wanted).where(clips.c.task_id == task_id).order_by(clips.c.index))
        return [dict(row) for row in rows.mappings()]


def part_attempts(engine: Engine, task_id: uuid.UUID | str) -> dict[int, int]:
    """The attempts the notifier recorded for each part of a task made across the fleet."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(task_parts.c.index, task_parts.c.attempt).where(task_parts.c.task_id == task_id)
        )
        return {index: attempt for index, attempt in rows}


@dataclass(frozen=True)
class HistoryLine:
    status: str
    progress: int
    attempt: int
    event_id: str | None


def history(engine: Engine, task_id: uuid.UUID | str) -> list[HistoryLine]:
    """The task's ``task_history``, in the order the changes were applied."""
    query = (
        select(
            task_history.c.status, task_history.c.progress, task_history.c.attempt, task_history.c.event_id
        )
        .where(task_history.c.task_id == task_id)
        .order_by(task_history.c.id)
    )
    with engine.connect() as conn:
        return [HistoryLine(*row) for row in conn.execute(query)]


def applied_events(engine: Engine) -> dict[str, datetime]:
    """Every event id the notifier handled (applied or found stale), and when."""
    query = select(applied_events_table.c.event_id, applied_events_table.c.applied_at)
    with engine.connect() as conn:
        return {event_id: applied_at for event_id, applied_at in conn.execute(query)}


def applied_event_ids(engine: Engine) -> set[str]:
    return set(applied_events(engine))


def count_rows(engine: Engine, table, *where) -> int:
    """How many rows of ``table`` match ``where`` (every row when none is given)."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
