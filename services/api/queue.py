"""A queued or processing task's place in line and when it should be processed
(``GET /tasks/<id>``'s ``queue``; the definitions and their error: docs/queue.md).

:func:`estimate` is the whole computation, a pure function over plain numbers; the
queries below only gather those numbers, in the caller's transaction (the one that read
the task, so the task and its place agree). Each query reads a range of an index: the
fleet's line (``tasks_dispatched_line_idx``), the owner's held tasks
(``tasks_held_idx``), the clips of the last ten minutes (``clips_made_at_idx``) and one
task's clips (``clips_pkey``); none reads all the tasks or all the clips.

The unit the fleet takes is a task until a worker plans it, then each of its parts (a
task made by one worker stays one unit): a position counts the units let out before the
task's own and not started (tasks still queued, parts at attempt 0), plus, for a held
task, its owner's held units before it. A part's work is already in its processing
task's remaining parts, so parts add to the position and not again to the estimate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, Select, Uuid, and_, bindparam, distinct, func, literal, select, tuple_
from sqlalchemy.engine import Connection

from services.api.tasks import Task
from shared.lifecycle import TaskStatus
from shared.outbox import HELD_PART, HELD_TASK, IN_FLIGHT_PART, IN_FLIGHT_TASK
from shared.tables import clips, task_parts, tasks

# The throughput and the mean size of a task are measured on the work of this window.
WINDOW = timedelta(minutes=10)


# --- the estimate: plain numbers in, the place out ---------------------------------------


@dataclass(frozen=True)
class Parts:
    """One task's parts: how many its plan has (None until a worker planned it) and how
    many distinct parts are made (a part in several formats is one part)."""

    total: int | None
    made: int = 0


@dataclass(frozen=True)
class Ahead:
    """Work the fleet takes before a task's own: ``units`` it takes one at a time (tasks
    today), ``known_parts`` the parts of those whose plan is known, ``unknown`` how many
    have no plan yet."""

    units: int
    known_parts: int
    unknown: int


@dataclass(frozen=True)
class RecentWork:
    """What the fleet did in the window: distinct parts made and the seconds from the
    first of them to the last (their clips' ``made_at``), and the tasks processed with
    their parts (the mean size of a task whose plan is not known yet)."""

    parts_made: int
    span_seconds: float
    tasks_processed: int
    parts_of_processed: int


@dataclass(frozen=True)
class Line:
    """Everything the estimate of one task reads. A processing task needs only its own
    parts and the recent work; a queued one also what is ahead of it and the rest of
    what the fleet is processing."""

    processing: bool
    own: Parts
    recent: RecentWork
    ahead: Sequence[Ahead] = ()
    in_progress: Sequence[Parts] = ()


@dataclass(frozen=True)
class Place:
    """A task's place in line: the units before its first one, and the seconds until it
    is processed (None: no basis for an estimate)."""

    position: int
    eta_seconds: float | None

    def as_json(self) -> dict[str, Any]:
        return {"position": self.position, "eta_seconds": self.eta_seconds}


def _left(parts: Parts, mean: float | None) -> float | None:
    """The parts of a task still to make; a task with no plan yet counts the mean."""
    total = parts.total if parts.total is not None else mean
    return None if total is None else max(total - parts.made, 0)


def _of_group(group: Ahead, mean: float | None) -> float | None:
    """The parts of a group of waiting tasks; those with no plan yet count the mean."""
    if not group.unknown:
        return group.known_parts
    return None if mean is None else group.known_parts + group.unknown * mean


def estimate(line: Line) -> Place:
    """The task's position and ETA, from the definitions of docs/queue.md.

    Position: 0 for a processing task, otherwise every unit ahead. ETA: the parts to make
    before the task is processed divided by the fleet's throughput while it worked (the
    distinct parts made in the window after the first, over the seconds from the first
    to the last), rounded to 0.1 s: for a processing task its own remaining parts; for a
    queued one also the rest of every processing task and the parts of everything ahead.
    A part count not known yet is the mean of the tasks processed in the window. No
    throughput (fewer than two parts made, or all at one moment), or an unknown count
    and no processed task to take a mean from, gives no ETA (None): nothing is made up.
    """
    recent = line.recent
    mean = recent.parts_of_processed / recent.tasks_processed if recent.tasks_processed else None
    waiting = [_left(line.own, mean)]
    if not line.processing:
        waiting += [_left(task, mean) for task in line.in_progress]
        waiting += [_of_group(group, mean) for group in line.ahead]
    position = 0 if line.processing else sum(group.units for group in line.ahead)
    parts = [count for count in waiting if count is not None]
    if recent.parts_made < 2 or recent.span_seconds <= 0 or len(parts) < len(waiting):
        return Place(position, None)
    # The first part's work began before the span, at a moment no row records: the span
    # is the time the fleet took to make the parts after it.
    return Place(position, round(sum(parts) * recent.span_seconds / (recent.parts_made - 1), 1))


# --- the numbers, from the database --------------------------------------------------------

_WINDOW_START = func.now() - bindparam("window", type_=Interval)
# A task's distinct parts made, from its own clips (the primary key's first column).
_made = clips.alias("made")
_PARTS_MADE_OF_TASK = (
    select(func.count(distinct(_made.c.index))).where(_made.c.task_id == tasks.c.id).scalar_subquery()
)
# The distinct parts made in the window (a part in N formats has N rows) and the first
# and last moments one was made, from one range of clips_made_at_idx.
_PARTS_MADE = select(
    func.count(distinct(tuple_(clips.c.task_id, clips.c.index))),
    func.min(clips.c.made_at),
    func.max(clips.c.made_at),
).where(clips.c.made_at >= _WINDOW_START)
# A task processed before its plan's size was recorded made all its parts: its clips
# count them.
_PROCESSED = select(
    func.count(),
    func.coalesce(func.sum(func.coalesce(tasks.c.clips_total, _PARTS_MADE_OF_TASK)), 0),
).where(
    tasks.c.id.in_(select(clips.c.task_id).where(clips.c.made_at >= _WINDOW_START)),
    tasks.c.status == TaskStatus.PROCESSED,
)
# The fleet's line: every user's tasks dispatched and not finished. IN_FLIGHT_TASK is the
# predicate of the partial indexes on them (tasks_dispatched_line_idx and
# tasks_owner_in_flight_idx): the planner uses them only when a query repeats it.
_IN_PROGRESS = select(tasks.c.clips_total, _PARTS_MADE_OF_TASK).where(
    IN_FLIGHT_TASK, tasks.c.status == TaskStatus.PROCESSING
)
_GROUP = (
    func.count(),
    func.coalesce(func.sum(tasks.c.clips_total), 0),
    func.count() - func.count(tasks.c.clips_total),
)
_DISPATCHED_QUEUED = and_(IN_FLIGHT_TASK, tasks.c.status == TaskStatus.QUEUED)
_ALL_DISPATCHED = select(*_GROUP).where(_DISPATCHED_QUEUED)
# Dispatched before the task, ties broken by id: the order workers take them in.
_DISPATCHED_BEFORE = select(*_GROUP).where(
    _DISPATCHED_QUEUED,
    tuple_(tasks.c.dispatched_at, tasks.c.id)
    < tuple_(bindparam("dispatched_at", type_=tasks.c.dispatched_at.type), bindparam("id", type_=Uuid)),
)
# The owner's held tasks created before it: the relay lets them out first.
_HELD_BEFORE = select(*_GROUP).where(
    HELD_TASK,
    tasks.c.owner_id == bindparam("owner", type_=Uuid),
    tuple_(tasks.c.created_at, tasks.c.id)
    < tuple_(bindparam("created_at", type_=tasks.c.created_at.type), bindparam("id", type_=Uuid)),
)


# Parts let out and not started (attempt 0) of the tasks in flight: the fleet takes them
# before a task let out after them. Their parts are counted by their own task already.
_OF_TASK = task_parts.join(tasks, tasks.c.id == task_parts.c.task_id)
_PARTS_WAITING = and_(IN_FLIGHT_TASK, IN_FLIGHT_PART, task_parts.c.attempt == 0)
_ALL_PARTS_WAITING = select(func.count(), literal(0), literal(0)).select_from(_OF_TASK).where(_PARTS_WAITING)
_PARTS_WAITING_BEFORE = (
    select(func.count(), literal(0), literal(0))
    .select_from(_OF_TASK)
    .where(
        _PARTS_WAITING,
        task_parts.c.dispatched_at < bindparam("dispatched_at", type_=tasks.c.dispatched_at.type),
    )
)
# The owner's held parts: the relay lets them out before any held task.
_OWN_HELD_PARTS = (
    select(func.count(), literal(0), literal(0))
    .select_from(_OF_TASK)
    .where(IN_FLIGHT_TASK, HELD_PART, tasks.c.owner_id == bindparam("owner", type_=Uuid))
)


def _ahead(conn: Connection, query: Select[int, Any, int], params: dict[str, Any]) -> Ahead:
    units, known_parts, unknown = conn.execute(query, params).one()
    return Ahead(int(units), int(known_parts), int(unknown))


def recent_work(conn: Connection) -> RecentWork:
    """The fleet's work in the window, as the caller's transaction sees it."""
    window = {"window": WINDOW}
    parts_made, first, last = conn.execute(_PARTS_MADE, window).one()
    span = 0.0 if first is None else (last - first).total_seconds()
    processed, parts = conn.execute(_PROCESSED, window).one()
    return RecentWork(int(parts_made), span, int(processed), int(parts))


def line_of(conn: Connection, task: Task) -> Line | None:
    """What :func:`estimate` needs for ``task``, read in the caller's transaction; None
    for a task neither queued nor processing (it has no place in line)."""
    own = Parts(task.clips_total, len({clip.index for clip in task.clips}))
    if task.status == TaskStatus.PROCESSING:
        return Line(processing=True, own=own, recent=recent_work(conn))
    if task.status != TaskStatus.QUEUED:
        return None
    if task.dispatched_at is not None:
        ahead = [
            _ahead(conn, _DISPATCHED_BEFORE, {"dispatched_at": task.dispatched_at, "id": task.id}),
            _ahead(conn, _PARTS_WAITING_BEFORE, {"dispatched_at": task.dispatched_at}),
        ]
    else:
        ahead = [
            _ahead(conn, _ALL_DISPATCHED, {}),
            _ahead(conn, _ALL_PARTS_WAITING, {}),
            _ahead(conn, _OWN_HELD_PARTS, {"owner": task.owner_id}),
            _ahead(
                conn, _HELD_BEFORE, {"owner": task.owner_id, "created_at": task.created_at, "id": task.id}
            ),
        ]
    in_progress = [Parts(total, int(made)) for total, made in conn.execute(_IN_PROGRESS)]
    return Line(processing=False, own=own, recent=recent_work(conn), ahead=ahead, in_progress=in_progress)


def place_of(conn: Connection, task: Task) -> Place | None:
    """The task's place in line, or None when it has none (neither queued nor processing)."""
    line = line_of(conn, task)
    return None if line is None else estimate(line)
