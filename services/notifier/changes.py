"""What an event does to a task: the ordering rules, without any I/O.

A task only moves forward (``shared.lifecycle``). Within an active status only a newer
attempt, a higher progress, clips just made or the first count of a task's parts is news;
progress shown to the owner never falls; a final status is never left; a deleted task
never changes again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from shared.events import ClipOutput, MalformedEvent, TaskStatusChanged
from shared.layout import is_task_output
from shared.lifecycle import TaskStatus, moves_forward
from shared.storage import parse_gs_uri

# Failure reasons come from ffmpeg and fetch errors; the row keeps a bounded excerpt.
MAX_FAILURE_REASON_CHARS = 2000
NO_FAILURE_REASON = "the worker reported a failure without a reason"
# Column ranges (integer, bigint): a value beyond them would fail on every redelivery.
MAX_INT4 = 2**31 - 1
MAX_INT8 = 2**63 - 1


@dataclass(frozen=True)
class TaskState:
    """The fields of a task row that decide whether an event is news."""

    status: TaskStatus
    progress: int
    attempt: int
    deleted: bool = False
    clips_total: int | None = None


@dataclass(frozen=True)
class Change:
    """The new values of a task row after an applied event."""

    status: TaskStatus
    progress: int
    attempt: int
    status_changed: bool
    failure_reason: str | None  # None: keep the row's
    worker_id: str | None  # None: keep the row's
    occurred_at: datetime
    clips_total: int | None = None  # None: keep the row's


def check_event(event: TaskStatusChanged) -> None:
    """Raise :class:`MalformedEvent` for an event that could never be applied."""
    if event.occurred_at.tzinfo is None:
        raise MalformedEvent("occurred_at has no time zone")
    if not 0 <= event.attempt <= MAX_INT4:
        raise MalformedEvent(f"attempt {event.attempt} is out of range")
    # Clips come as they are made, with the outcome, and with a failure (the parts made
    # before it stay the task's).
    if event.outputs and event.status not in (TaskStatus.PROCESSING, TaskStatus.PROCESSED, TaskStatus.FAILED):
        raise MalformedEvent(f"a {event.status} event names outputs")
    if event.part is not None and event.part > MAX_INT4:
        raise MalformedEvent(f"part {event.part} is out of range")
    if event.clips_total is not None and event.clips_total > MAX_INT4:
        raise MalformedEvent(f"clips_total {event.clips_total} is out of range")
    # One clip per part and format (the clips table's key).
    keys = [(clip.index, clip.format) for clip in event.outputs]
    if len(set(keys)) != len(keys):
        raise MalformedEvent(f"clips repeat a part and format: {sorted(keys)}")
    for clip in event.outputs:
        if not (
            0 <= clip.index <= MAX_INT4
            and 0 <= clip.size_bytes <= MAX_INT8
            and 0 <= clip.duration_seconds < math.inf
        ):
            raise MalformedEvent(f"clip {clip.index} has an index, duration or size out of range")
        for uri in (clip.uri, clip.poster_uri, clip.preview_uri):
            if uri is not None:
                try:
                    parse_gs_uri(uri)
                except ValueError as exc:
                    raise MalformedEvent(str(exc)) from None


def own_outputs(event: TaskStatusChanged, clips_bucket: str) -> tuple[tuple[ClipOutput, ...], list[str]]:
    """The event's outputs that lie in the task's own folder of the clips bucket, and the
    URIs it names anywhere else.

    Whoever can publish on ``task-events`` must not attach another task's clips or another
    user's upload to a task: a clip outside the folder is left out with its poster and
    preview, and a poster or preview outside it is left out from a clip that is inside.
    """
    kept: list[ClipOutput] = []
    refused: list[str] = []
    for clip in event.outputs:
        if not is_task_output(clip.uri, clips_bucket, event.task_id):
            refused += _clip_objects(clip)
            continue
        for extra in ("poster_uri", "preview_uri"):
            uri = getattr(clip, extra)
            if uri and not is_task_output(uri, clips_bucket, event.task_id):
                refused.append(uri)
                clip = clip.model_copy(update={extra: None})
        kept.append(clip)
    return tuple(kept), refused


def plan_change(state: TaskState, event: TaskStatusChanged) -> Change | None:
    """The change ``event`` makes to a task in ``state``; None if it is stale."""
    if state.deleted or not moves_forward(state.status, event.status):
        return None
    if event.status is TaskStatus.FAILED and event.attempt < state.attempt:
        # A superseded attempt gave up while a newer one runs: the newer one decides.
        return None
    if event.status == state.status:
        newer_attempt = event.attempt > state.attempt
        more_progress = event.attempt == state.attempt and event.progress > state.progress
        # A clip is whole whichever attempt made it: it is recorded as soon as it comes.
        counted = state.clips_total is None and event.clips_total is not None
        if not (newer_attempt or more_progress or event.outputs or counted):
            return None
    failure_reason = None
    if event.status is TaskStatus.FAILED:
        failure_reason = (event.failure_reason or NO_FAILURE_REASON)[:MAX_FAILURE_REASON_CHARS]
    # A processed result is kept even from an older attempt: the clips exist and are whole.
    progress = 100 if event.status is TaskStatus.PROCESSED else max(state.progress, event.progress)
    return Change(
        status=event.status,
        progress=progress,
        attempt=max(state.attempt, event.attempt),
        status_changed=event.status != state.status,
        failure_reason=failure_reason,
        worker_id=event.worker_id,
        occurred_at=event.occurred_at,
        clips_total=event.clips_total,
    )


def _clip_objects(clip: ClipOutput) -> list[str]:
    return [uri for uri in (clip.uri, clip.poster_uri, clip.preview_uri) if uri]


def event_objects(event: TaskStatusChanged) -> list[str]:
    """Every object URI an event names: clips, their posters and previews."""
    return [uri for clip in event.outputs for uri in _clip_objects(clip)]


def orphaned_objects(state: TaskState, event: TaskStatusChanged, recorded: set[str]) -> list[str]:
    """Objects of an event with clips that was not applied and that no clip row holds.

    For a deleted or canceled task every object the event names is an orphan (the api
    already removed the task's objects); otherwise only those the recorded clips do not
    use, so a second run that wrote the same names never loses the live clips.
    """
    uris = event_objects(event)
    if state.deleted or state.status is TaskStatus.CANCELED:
        return uris
    return [uri for uri in uris if uri not in recorded]
