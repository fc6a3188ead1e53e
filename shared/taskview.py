"""A task as its owner sees it: the JSON of ``GET /tasks/<id>``, rendered in one place
for the api's answers and the webhooks' payloads."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.engine import Connection

from shared import tables
from shared.events import ClipSpec, FormatSpec
from shared.layout import DEFAULT_FORMAT
from shared.lifecycle import TaskStatus


class ClipFacts(Protocol):
    @property
    def index(self) -> int: ...
    @property
    def format(self) -> str: ...
    @property
    def duration_seconds(self) -> float: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def poster_uri(self) -> str | None: ...
    @property
    def preview_uri(self) -> str | None: ...


class TaskFacts(Protocol):
    """What rendering needs of a task (the api's ``Task`` and :class:`StoredTask` both have it)."""

    @property
    def id(self) -> uuid.UUID: ...
    @property
    def status(self) -> TaskStatus: ...
    @property
    def progress(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def failure_reason(self) -> str | None: ...
    @property
    def source_kind(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def source_name(self) -> str | None: ...
    @property
    def spec(self) -> Mapping[str, Any]: ...
    @property
    def created_at(self) -> datetime: ...
    @property
    def updated_at(self) -> datetime: ...
    @property
    def status_changed_at(self) -> datetime: ...
    @property
    def clips_total(self) -> int | None: ...
    @property
    def clips(self) -> Sequence[ClipFacts]: ...


@dataclass(frozen=True)
class StoredClip:
    index: int
    format: str
    duration_seconds: float
    size_bytes: int
    poster_uri: str | None
    preview_uri: str | None


@dataclass(frozen=True)
class StoredTask:
    """A task row and its clips, read for rendering outside the api."""

    id: uuid.UUID
    owner_id: uuid.UUID
    status: TaskStatus
    progress: int
    attempt: int
    failure_reason: str | None
    source_kind: str
    source: str
    source_name: str | None
    spec: Mapping[str, Any]
    created_at: datetime
    updated_at: datetime
    status_changed_at: datetime
    clips_total: int | None
    clips: tuple[StoredClip, ...] = field(default=())


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def render_options(stored_spec: Mapping[str, Any]) -> dict[str, Any]:
    """The processing options in force, from a task's stored spec: the frames (today's
    one 16:9 frame when the task named none), the loudness target or ``"off"``, the card
    text or None, and how parts are split. The shape of ``GET /tasks/<id>``'s ``options``."""
    spec = ClipSpec.model_validate(stored_spec)
    formats = spec.formats or (FormatSpec(format="16:9", fit=spec.fit),)
    return {
        "formats": [f.model_dump() for f in formats],
        "loudness": spec.loudness.model_dump() if spec.loudness else "off",
        "card": spec.card.model_dump() if spec.card else None,
        "split": spec.split,
    }


def render_task(task: TaskFacts, base_url: str) -> dict[str, Any]:
    """The task in full, its links prefixed with ``base_url`` (empty: relative links).

    Download links are always the api's routes, even with signed URLs on: a read costs
    no storage call, and a URL is signed only when one file is downloaded.
    """
    prefix = base_url.rstrip("/")
    self_path = f"/tasks/{task.id}"
    links = {"self": prefix + self_path}
    source: dict[str, Any]
    if task.source_kind == "upload":
        source = {"kind": "upload", "filename": task.source_name}
        links["original"] = f"{prefix}{self_path}/original"
    else:
        source = {"kind": "url", "url": task.source}
    return {
        "id": str(task.id),
        "status": task.status.value,
        "progress": task.progress,
        "attempts": task.attempt,
        "failure_reason": task.failure_reason,
        "source": source,
        "options": render_options(task.spec),
        "clips": [_render_clip(clip, f"{prefix}{self_path}") for clip in task.clips],
        "clips_total": task.clips_total,
        "created_at": _iso(task.created_at),
        "updated_at": _iso(task.updated_at),
        "status_changed_at": _iso(task.status_changed_at),
        "links": links,
    }


def clip_links(task_path: str, clip: ClipFacts) -> dict[str, str]:
    """A clip's download links under ``task_path``: the clip, and its poster and preview
    where it has them. A format other than 16:9 is named by the ``format`` query, so the
    links of clips made before formats existed stay as they were."""
    path = f"{task_path}/clips/{clip.index}"
    query = "" if clip.format == DEFAULT_FORMAT else f"?format={clip.format}"
    links = {"download": path + query}
    if clip.poster_uri:
        links["poster"] = f"{path}/poster{query}"
    if clip.preview_uri:
        links["preview"] = f"{path}/preview{query}"
    return links


def _render_clip(clip: ClipFacts, task_path: str) -> dict[str, Any]:
    return {
        "index": clip.index,
        "format": clip.format,
        "duration_seconds": clip.duration_seconds,
        "size_bytes": clip.size_bytes,
        "links": clip_links(task_path, clip),
    }


def load_task(conn: Connection, task_id: uuid.UUID) -> StoredTask | None:
    """The task and its clips as the caller's transaction sees them (deleted ones too)."""
    t, c = tables.tasks.c, tables.clips.c
    row = conn.execute(
        select(
            t.id,
            t.owner_id,
            t.status,
            t.progress,
            t.attempt,
            t.failure_reason,
            t.source_kind,
            t.source,
            t.source_name,
            t.spec,
            t.created_at,
            t.updated_at,
            t.status_changed_at,
            t.clips_total,
        ).where(t.id == task_id)
    ).first()
    if row is None:
        return None
    clips = tuple(
        StoredClip(**r._asdict())
        for r in conn.execute(
            select(c.index, c.format, c.duration_seconds, c.size_bytes, c.poster_uri, c.preview_uri)
            .where(c.task_id == task_id)
            .order_by(c.index, c.format)
        )
    )
    values = row._asdict()
    values["status"] = TaskStatus(values["status"])
    return StoredTask(**values, clips=clips)
