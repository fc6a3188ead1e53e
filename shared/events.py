"""The platform's events and their codec (Pub/Sub helpers: :mod:`shared.pubsub`).

A message is a JSON body carrying ``schema_version`` and the event's fields, with the
attributes ``event_type``, ``task_id``, ``event_id`` and ``schema_version``.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.lifecycle import TaskStatus

SCHEMA_VERSION: Final = 1

log = logging.getLogger(__name__)


class MalformedEvent(ValueError):
    """A message that can never be applied: bad JSON, unknown type or schema version."""


def _new_event_id() -> str:
    return str(uuid.uuid4())


def _now() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# The frames a clip can be made in: the 16:9 frame is the spec's ``width`` x ``height``
# (1280x720 by default); the others have a size of their own.
ClipFormat = Literal["16:9", "9:16", "1:1"]
FORMAT_SIZES: Final[dict[str, tuple[int, int]]] = {"9:16": (720, 1280), "1:1": (1080, 1080)}
CARD_TEXT_MAX_CHARS: Final = 60
# The most parts a plan may have: far above any source the limits let in (the longest
# allowed source cut into its shortest parts), low enough to count them cheaply.
MAX_PARTS: Final = 100_000


class FormatSpec(_Frozen):
    """One frame a part is delivered in, and how the source is fitted into it."""

    format: ClipFormat = "16:9"
    fit: Literal["pad", "crop"] = "pad"


class LoudnessSpec(_Frozen):
    """The integrated loudness (ITU-R BS.1770 / EBU R128) the content's audio is brought
    to, and the true peak it may not pass."""

    target_lufs: Annotated[float, Field(ge=-70, le=-5)] = -14.0
    true_peak_dbtp: Annotated[float, Field(ge=-9, le=0)] = -1.0


class CardText(_Frozen):
    """Text set on the opening and closing cards (for example the athlete's name and
    number, and the event and date)."""

    title: Annotated[str, Field(max_length=CARD_TEXT_MAX_CHARS)] | None = None
    subtitle: Annotated[str, Field(max_length=CARD_TEXT_MAX_CHARS)] | None = None


class ClipSpec(_Frozen):
    """What a clip is (DESIGN section 6): every knob with its default.

    ``formats`` empty means the one 16:9 frame fitted by ``fit``, as before formats
    existed. ``loudness`` None keeps the source's levels. ``split`` ``scenes`` moves a
    part boundary back to the last scene cut within ``scene_window_seconds`` before it.
    """

    mode: Literal["split", "trim"] = "split"
    fit: Literal["pad", "crop"] = "pad"
    max_part_seconds: Annotated[float, Field(gt=0, le=600)] = 20.0
    width: Annotated[int, Field(ge=16, le=7680, multiple_of=2)] = 1280
    height: Annotated[int, Field(ge=16, le=4320, multiple_of=2)] = 720
    fps: Annotated[int, Field(ge=1, le=120)] = 30
    video_codec: Literal["libx264"] = "libx264"
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow"] = "veryfast"
    crf: Annotated[int, Field(ge=0, le=51)] = 23
    audio_rate: Literal[44100, 48000] = 48000
    card_seconds: Annotated[float, Field(ge=0, le=10)] = 1.0
    formats: tuple[FormatSpec, ...] = ()
    loudness: LoudnessSpec | None = None
    card: CardText | None = None
    split: Literal["fixed", "scenes"] = "fixed"
    scene_window_seconds: Annotated[float, Field(gt=0, le=20)] = 5.0


class TaskSubmitted(_Frozen):
    """``video-tasks``: a task to process."""

    event_type: Literal["TaskSubmitted"] = "TaskSubmitted"
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=_new_event_id)
    task_id: uuid.UUID
    owner_id: uuid.UUID
    source: str  # gs://bucket/object of an upload, or the http(s) URL to fetch
    spec: ClipSpec = ClipSpec()
    submitted_at: datetime = Field(default_factory=_now)


class PartSubmitted(_Frozen):
    """One part of a task whose parts are made across the fleet.

    The worker that planned the task publishes one per part on ``task-events``, after it
    stored the part's segment (``segment``, in the task's folder of the clips bucket).
    The notifier records the part and writes the same event to the outbox for
    ``video-tasks``, where it goes out when the task's owner has room (``shared.outbox``).
    The part's first instant is ``seek_to`` on the timeline the segment keeps;
    ``parts_total`` is the number of parts of the plan, so the worker that records the
    last one can tell.

    ``in_place``: the planning worker makes this part itself, from the source it holds,
    while it hands out the others. The notifier records it as let out at once (one of
    the owner's units until its clips are recorded) and never writes it to the outbox;
    its segment is not stored.
    """

    event_type: Literal["PartSubmitted"] = "PartSubmitted"
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=_new_event_id)
    task_id: uuid.UUID
    owner_id: uuid.UUID
    index: Annotated[int, Field(ge=1, le=MAX_PARTS)]
    start: Annotated[float, Field(ge=0)]
    duration: Annotated[float, Field(gt=0)]
    seek_to: float  # a container's timeline may start before zero
    segment: str  # gs://bucket/object of the part's segment
    parts_total: Annotated[int, Field(ge=1, le=MAX_PARTS)]
    spec: ClipSpec = ClipSpec()
    in_place: bool = False
    submitted_at: datetime = Field(default_factory=_now)

    @model_validator(mode="after")
    def _index_within_the_plan(self) -> PartSubmitted:
        if self.index > self.parts_total:
            raise ValueError(f"part {self.index} of a plan of {self.parts_total}")
        return self


class ClipOutput(_Frozen):
    index: int
    format: ClipFormat = "16:9"
    uri: str
    poster_uri: str | None = None
    preview_uri: str | None = None  # a few silent seconds to loop beside the poster
    duration_seconds: float
    size_bytes: int


class TaskStatusChanged(_Frozen):
    """``task-events``: a task's status, progress or outcome changed.

    A ``processing`` event may carry the clips of the parts made since the last one
    (each recorded and announced as soon as it is made) and ``clips_total``, the number
    of parts the attempt's plan has; a ``processed`` event carries every clip.

    ``part`` names the part of a task made across the fleet that the event is about:
    a ``processing`` event with a part and no clips begins that part's attempt
    ``attempt`` (each part counts its own attempts, from 1; its ``PartSubmitted``
    recorded it at 0); the task's own attempt is the planning worker's.
    """

    event_type: Literal["TaskStatusChanged"] = "TaskStatusChanged"
    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: str = Field(default_factory=_new_event_id)
    task_id: uuid.UUID
    status: TaskStatus
    attempt: int = 0
    progress: Annotated[int, Field(ge=0, le=100)] = 0
    outputs: tuple[ClipOutput, ...] = ()
    clips_total: Annotated[int, Field(ge=0)] | None = None
    part: Annotated[int, Field(ge=1)] | None = None
    failure_reason: str | None = None
    worker_id: str | None = None
    occurred_at: datetime = Field(default_factory=_now)


Event = TaskSubmitted | PartSubmitted | TaskStatusChanged
_EVENT_TYPES: dict[str, type[Event]] = {
    "TaskSubmitted": TaskSubmitted,
    "PartSubmitted": PartSubmitted,
    "TaskStatusChanged": TaskStatusChanged,
}


def encode(event: Event) -> tuple[bytes, dict[str, str]]:
    """The message body and attributes of ``event``."""
    data = event.model_dump_json().encode()
    attributes = {
        "event_type": event.event_type,
        "event_id": event.event_id,
        "task_id": str(event.task_id),
        "schema_version": str(event.schema_version),
    }
    if isinstance(event, PartSubmitted):
        # The outbox finds a part's row by its task and index (shared/outbox.py).
        attributes["part"] = str(event.index)
    return data, attributes


def decode(data: bytes, attributes: dict[str, str] | None = None) -> Event:
    """The event in a message; :class:`MalformedEvent` if it can never be read."""
    try:
        body = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedEvent(f"body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise MalformedEvent("body is not a JSON object")
    event_type = body.get("event_type") or (attributes or {}).get("event_type")
    model = _EVENT_TYPES.get(str(event_type))
    if model is None:
        raise MalformedEvent(f"unknown event type {event_type!r}")
    if body.get("schema_version") != SCHEMA_VERSION:
        raise MalformedEvent(f"unsupported schema version {body.get('schema_version')!r}")
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise MalformedEvent(f"invalid {event_type}: {exc.errors(include_url=False)}") from None
