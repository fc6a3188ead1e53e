"""The transactional outbox: events are written with the change that causes them and
published afterwards, so a crash or a Pub/Sub outage delays a message but never loses it.

:func:`enqueue` runs inside the transaction that creates or cancels a task. After the
commit the request publishes the row at once (:func:`publish_committed`); a relay thread
in every api process (:class:`OutboxRelay`) republishes rows still unmarked after
``outbox_republish_after_seconds``, claiming them with ``FOR UPDATE SKIP LOCKED`` so
replicas never publish the same row at the same moment. A row may still be published
twice (a crash after the publish, before the mark): every consumer is idempotent.

Each user has at most ``max_parts_in_flight_per_user`` units of work in flight: let out
to the workers and not done. A unit is a task until a worker plans it, then each of its
parts until its clips are recorded (a task made by one worker stays one unit until it
ends). A unit past that is stored but held: a task with ``tasks.dispatched_at`` NULL (the
request does not publish it), a part with ``task_parts.dispatched_at`` NULL (the notifier
records its PartSubmitted but does not publish it). The relay never claims a held unit's
row. Whenever a unit ends (the notifier, at once) and each relay round (every api, as a
fallback) the oldest held units of every user with room are let out (:func:`release` and
:func:`release_held`): a user's earlier task's parts before a later task. No user ever has
more than that many messages in the fleet's line, so the fleet takes every waiting user's
work in turn. Deleting a task removes its unpublished rows in the same transaction, and a
task that ends drops its held parts' rows, so neither is ever published.

A published message can still be lost after Pub/Sub accepted it: a Pub/Sub emulator
restart, a subscription deleted and created again, a processed event lost after the
worker acked. So the relay also sweeps (:func:`requeue_stalled`): the TaskSubmitted of a
task still ``queued``, or ``processing`` with no news, ``outbox_requeue_after_seconds``
after it was published is unmarked and goes out again with the next round.
"""

from __future__ import annotations

import json
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from google.api_core.exceptions import GoogleAPIError
from sqlalchemy import (
    Integer,
    Interval,
    Text,
    Uuid,
    and_,
    bindparam,
    cast,
    delete,
    exists,
    func,
    select,
    tuple_,
    union,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import SQLAlchemyError

from shared.config import Settings
from shared.events import Event, encode
from shared.lifecycle import TaskStatus
from shared.logging import about_task, task_logger
from shared.periodic import PeriodicThread
from shared.pubsub import Publisher
from shared.tables import outbox, task_parts, tasks, users

log = task_logger(__name__)

# Published rows are kept a while for inspection, then pruned.
_KEEP_PUBLISHED = timedelta(days=1)
_PRUNE_EVERY = timedelta(hours=1)

_INSERT = insert(outbox).returning(outbox.c.id)
# The unit a row lets out: a TaskSubmitted its task, a PartSubmitted its task's part
# (rows of other events name no unit to dispatch).
_EVENT_TYPE = outbox.c.attributes["event_type"].astext
_IS_SUBMITTED = _EVENT_TYPE == "TaskSubmitted"
_IS_PART = _EVENT_TYPE == "PartSubmitted"
_ROW_TASK_ID = outbox.c.attributes["task_id"].astext
_ROW_PART = outbox.c.attributes["part"].astext
_CLAIM = (
    select(outbox.c.id, outbox.c.topic, outbox.c.data, outbox.c.attributes)
    .where(
        outbox.c.published_at.is_(None),
        outbox.c.created_at < func.now() - bindparam("after", type_=Interval),
        ~exists().where(
            _IS_SUBMITTED,
            tasks.c.id == cast(_ROW_TASK_ID, Uuid),
            tasks.c.dispatched_at.is_(None),
        ),
        ~exists().where(
            _IS_PART,
            task_parts.c.task_id == cast(_ROW_TASK_ID, Uuid),
            task_parts.c.index == cast(_ROW_PART, Integer),
            task_parts.c.dispatched_at.is_(None),
        ),
    )
    .order_by(outbox.c.id)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_MARK = (
    update(outbox)
    .where(outbox.c.id.in_(bindparam("ids", expanding=True)), outbox.c.published_at.is_(None))
    .values(published_at=func.now())
)
_PRUNE = delete(outbox).where(outbox.c.published_at < func.now() - bindparam("keep", type_=Interval))
# A task's status changes (and its updated_at moves) with every event the notifier
# applies: a queued task, or a processing one with no event, this long after its
# TaskSubmitted went out has most likely lost its message. Republishing it is safe: a
# worker acks a copy of a task already settled, and hands back one another worker holds.
_STALLED_SINCE = func.now() - bindparam("after", type_=Interval)
_REQUEUE_STALLED = (
    update(outbox)
    .where(
        outbox.c.published_at < _STALLED_SINCE,
        _IS_SUBMITTED,
        tasks.c.id == cast(_ROW_TASK_ID, Uuid),
        tasks.c.deleted_at.is_(None),
        (tasks.c.status == TaskStatus.QUEUED)
        | ((tasks.c.status == TaskStatus.PROCESSING) & (tasks.c.updated_at < _STALLED_SINCE)),
    )
    .values(published_at=None)
    .returning(outbox.c.id, tasks.c.id.label("task_id"), tasks.c.status)
)
# Serialises every decision about one owner's slots (a submit, a release) across replicas.
_LOCK_OWNER = select(users.c.id).where(users.c.id == bindparam("owner")).with_for_update(key_share=True)
# A task in flight was let out and has not ended; a held task waits for room. Both are
# the predicates of partial indexes (shared/tables.py), which the planner uses only for
# a query that repeats them (these, and the place in line of services/api/queue.py).
IN_FLIGHT_TASK = and_(
    tasks.c.dispatched_at.is_not(None),
    tasks.c.deleted_at.is_(None),
    tasks.c.status.in_([TaskStatus.QUEUED, TaskStatus.PROCESSING]),
)
HELD_TASK = and_(
    tasks.c.dispatched_at.is_(None), tasks.c.deleted_at.is_(None), tasks.c.status == TaskStatus.QUEUED
)
# A task with parts was planned: its parts are its units from then on.
PLANNED = exists().where(task_parts.c.task_id == tasks.c.id)
# A part let out and not made (the predicate of task_parts_in_flight_idx), of a task in
# flight; a held part, of a task in flight (task_parts_held_idx).
IN_FLIGHT_PART = and_(task_parts.c.dispatched_at.is_not(None), task_parts.c.made_at.is_(None))
HELD_PART = task_parts.c.dispatched_at.is_(None)
_OF_TASK = task_parts.join(tasks, tasks.c.id == task_parts.c.task_id)


def _units_in_flight(owner: Any) -> Any:
    """How many units of ``owner`` (a value or a column) are in flight, as an expression."""
    whole = select(func.count()).where(tasks.c.owner_id == owner, IN_FLIGHT_TASK, ~PLANNED)
    parts = (
        select(func.count())
        .select_from(_OF_TASK)
        .where(tasks.c.owner_id == owner, IN_FLIGHT_TASK, IN_FLIGHT_PART)
    )
    return whole.scalar_subquery() + parts.scalar_subquery()


_IN_FLIGHT = select(_units_in_flight(bindparam("owner")))
# Owners with held units and room (owners still full are not even looked at, so a crowd
# of them never starves the others out of a batch).
_HELD = union(
    select(tasks.c.owner_id).where(HELD_TASK),
    select(tasks.c.owner_id).select_from(_OF_TASK).where(IN_FLIGHT_TASK, HELD_PART),
).subquery("held")
_OWNERS_WITH_ROOM = (
    select(_HELD.c.owner_id)
    .where(_units_in_flight(_HELD.c.owner_id) < bindparam("cap"))
    .limit(bindparam("batch"))
)
_OLDEST_HELD = (
    select(tasks.c.id)
    .where(tasks.c.owner_id == bindparam("owner"), HELD_TASK)
    .order_by(tasks.c.created_at, tasks.c.id)
    .limit(bindparam("free"))
    .with_for_update()
)
_DISPATCH_OLDEST_HELD = (
    update(tasks)
    .where(tasks.c.id.in_(_OLDEST_HELD.scalar_subquery()))
    .values(dispatched_at=func.now())
    .returning(cast(tasks.c.id, Text).label("task_id"))
)
# The owner's held parts, the earliest task's first: a task is done before a later one.
_OLDEST_HELD_PARTS = (
    select(task_parts.c.task_id, task_parts.c.index)
    .select_from(_OF_TASK)
    .where(tasks.c.owner_id == bindparam("owner"), IN_FLIGHT_TASK, HELD_PART)
    .order_by(tasks.c.created_at, tasks.c.id, task_parts.c.index)
    .limit(bindparam("free"))
    .with_for_update(of=task_parts)
)
_DISPATCH_OLDEST_HELD_PARTS = (
    update(task_parts)
    .where(tuple_(task_parts.c.task_id, task_parts.c.index).in_(_OLDEST_HELD_PARTS))
    .values(dispatched_at=func.now())
    .returning(cast(task_parts.c.task_id, Text).label("task_id"), task_parts.c.index)
)
_UNPUBLISHED_UNITS = and_(outbox.c.published_at.is_(None), _IS_SUBMITTED | _IS_PART)
_ROWS = select(outbox.c.id, outbox.c.topic, outbox.c.data, outbox.c.attributes).order_by(outbox.c.id)
# The unpublished TaskSubmitted rows of the tasks ``:task_ids``.
_SUBMITTED_ROWS = _ROWS.where(
    outbox.c.published_at.is_(None), _IS_SUBMITTED, _ROW_TASK_ID.in_(bindparam("task_ids", expanding=True))
)
# The unpublished PartSubmitted rows of the parts ``:parts`` ((task id, index) as text).
_PART_ROWS = _ROWS.where(
    outbox.c.published_at.is_(None),
    _IS_PART,
    tuple_(_ROW_TASK_ID, _ROW_PART).in_(bindparam("parts", expanding=True)),
)
# A task's unpublished TaskSubmitted and PartSubmitted rows.
_WITHDRAW_UNITS = delete(outbox).where(_UNPUBLISHED_UNITS, bindparam("task_id") == _ROW_TASK_ID)

# How often the relay sweeps at most: the query reads every published row of the day.
_SWEEP_EVERY_MAX_SECONDS = 30.0

# What a failed publish looks like: an API error, a timeout, or the channel going away.
_PUBLISH_ERRORS = (GoogleAPIError, FutureTimeout, OSError)


@dataclass(frozen=True)
class OutboxMessage:
    """A row of the outbox: an encoded event and the topic it goes to."""

    id: int
    topic: str
    data: bytes
    attributes: dict[str, str]


def enqueue(conn: Connection, topic: str, event: Event) -> OutboxMessage:
    """Write ``event`` for ``topic`` in the caller's transaction."""
    data, attributes = encode(event)
    row_id = conn.execute(_INSERT.values(topic=topic, data=data, attributes=attributes)).scalar_one()
    return OutboxMessage(row_id, topic, data, attributes)


def lock_owner(conn: Connection, owner_id: object) -> bool:
    """Lock the owner's row until the transaction ends (False: no such user): one
    decision about an owner's slots at a time, whichever replica makes it."""
    return conn.execute(_LOCK_OWNER, {"owner": owner_id}).first() is not None


def in_flight(conn: Connection, owner_id: object) -> int:
    """How many of the owner's units are let out and not done: tasks not planned yet (nor
    ended, nor deleted), and parts not made of tasks still in flight."""
    return int(conn.execute(_IN_FLIGHT, {"owner": owner_id}).scalar_one())


def withdraw_units(conn: Connection, task_id: object) -> int:
    """Remove the task's TaskSubmitted and PartSubmitted rows not published yet (a held
    unit's always are not), so no worker ever receives them: for a task canceled,
    deleted or ended. Returns how many rows went."""
    return conn.execute(_WITHDRAW_UNITS, {"task_id": str(task_id)}).rowcount


def _message(row: Row[*tuple[Any, ...]]) -> OutboxMessage:
    attributes = row.attributes if isinstance(row.attributes, dict) else json.loads(row.attributes)
    return OutboxMessage(row.id, row.topic, bytes(row.data), attributes)


def release(conn: Connection, owner_id: object, cap: int) -> list[OutboxMessage]:
    """Let out the owner's oldest held units while the owner has room, in the caller's
    transaction: parts of the earliest planned task first, then held tasks by age.
    Returns their rows, to publish after the commit.

    The owner's row is locked first (until the transaction ends), so two processes never
    fill the same room twice.
    """
    if not lock_owner(conn, owner_id):
        return []
    free = cap - in_flight(conn, owner_id)
    if free <= 0:
        return []
    parts = conn.execute(_DISPATCH_OLDEST_HELD_PARTS, {"owner": owner_id, "free": free}).all()
    free -= len(parts)
    task_ids = (
        conn.execute(_DISPATCH_OLDEST_HELD, {"owner": owner_id, "free": free}).scalars().all()
        if free > 0
        else []
    )
    messages = []
    if parts:
        keys = [(row.task_id, str(row.index)) for row in parts]
        messages += [_message(row) for row in conn.execute(_PART_ROWS, {"parts": keys})]
    if task_ids:
        messages += [_message(row) for row in conn.execute(_SUBMITTED_ROWS, {"task_ids": task_ids})]
    for row in parts:
        with about_task(row.task_id):
            log.info("part %d dispatched: its owner has room", row.index)
    for task_id in task_ids:
        with about_task(task_id):
            log.info("task dispatched: its owner has room")
    return messages


def release_owner(engine: Engine, publisher: Publisher, settings: Settings, owner_id: object) -> int:
    """:func:`release` for one owner in a transaction of its own, and publish what went
    out; returns how many units. A publish that fails leaves the row to the relay."""
    with engine.begin() as conn:
        messages = release(conn, owner_id, settings.max_parts_in_flight_per_user)
    publish_committed(engine, publisher, settings, messages)
    return len(messages)


def release_held(engine: Engine, publisher: Publisher, settings: Settings) -> int:
    """Let out the oldest held units of every owner with room and publish them; returns
    how many units went out.

    Each owner is decided in a transaction of its own, under the owner's lock. A publish
    that fails leaves the dispatched row to the relay.
    """
    with engine.connect() as conn:
        owners = (
            conn.execute(
                _OWNERS_WITH_ROOM,
                {"cap": settings.max_parts_in_flight_per_user, "batch": settings.outbox_relay_batch},
            )
            .scalars()
            .all()
        )
    return sum(release_owner(engine, publisher, settings, owner) for owner in owners)


def publish_committed(
    engine: Engine, publisher: Publisher, settings: Settings, messages: list[OutboxMessage]
) -> bool:
    """Publish rows just committed and mark them; on failure leave them to the relay.

    Returns whether every message was published. Never raises for a Pub/Sub or database
    failure: the rows are durable, and the relay publishes them later.
    """
    published = []
    for message in messages:
        try:
            publisher.publish_raw(message.topic, message.data, message.attributes).result(
                timeout=settings.outbox_publish_timeout_seconds
            )
            published.append(message.id)
        except _PUBLISH_ERRORS as exc:
            with about_task(message.attributes.get("task_id")):
                log.warning("publish deferred to the outbox relay: %s", exc, extra={"outbox_id": message.id})
    if published:
        try:
            with engine.begin() as conn:
                conn.execute(_MARK, {"ids": published})
        except SQLAlchemyError as exc:
            # Unmarked rows are published again by the relay: harmless duplicates.
            log.warning("could not mark outbox rows %s published: %s", published, exc)
    return len(published) == len(messages)


def relay_once(engine: Engine, publisher: Publisher, settings: Settings) -> int:
    """Publish the oldest unpublished rows older than the republish delay; returns how
    many were published. The claimed rows stay locked until they are marked."""
    with engine.begin() as conn:
        rows = conn.execute(
            _CLAIM,
            {
                "after": timedelta(seconds=settings.outbox_republish_after_seconds),
                "batch": settings.outbox_relay_batch,
            },
        ).all()
        pending = []
        for row in rows:
            attributes = row.attributes if isinstance(row.attributes, dict) else json.loads(row.attributes)
            pending.append(
                (row.id, attributes, publisher.publish_raw(row.topic, bytes(row.data), attributes))
            )
        published = []
        for row_id, attributes, future in pending:
            with about_task(attributes.get("task_id")):
                try:
                    future.result(timeout=settings.outbox_publish_timeout_seconds)
                    published.append(row_id)
                    log.info("outbox row %s published by the relay", row_id)
                except _PUBLISH_ERRORS as exc:
                    log.warning("outbox row %s not published, will retry: %s", row_id, exc)
        if published:
            conn.execute(_MARK, {"ids": published})
    return len(published)


def requeue_stalled(engine: Engine, settings: Settings) -> int:
    """Unmark the published TaskSubmitted of every task that made no progress for
    ``outbox_requeue_after_seconds`` since, so the relay publishes it again; returns
    how many. A row pruned already (a day after its publication) is out of reach."""
    with engine.begin() as conn:
        rows = conn.execute(
            _REQUEUE_STALLED, {"after": timedelta(seconds=settings.outbox_requeue_after_seconds)}
        ).all()
    for row in rows:
        with about_task(row.task_id):
            log.warning(
                "task still %s %.0f s after its TaskSubmitted was published; publishing it again",
                row.status,
                settings.outbox_requeue_after_seconds,
                extra={"outbox_id": row.id},
            )
    return len(rows)


def prune(engine: Engine) -> int:
    """Delete rows published more than a day ago; returns how many went."""
    with engine.begin() as conn:
        return conn.execute(_PRUNE, {"keep": _KEEP_PUBLISHED}).rowcount


class OutboxRelay(PeriodicThread):
    """A daemon thread that, every ``outbox_relay_interval_seconds``, lets out held units
    (:func:`release_held`) and publishes what is due (:func:`relay_once`)."""

    def __init__(self, engine: Engine, publisher: Publisher, settings: Settings) -> None:
        self.engine = engine
        self.publisher = publisher
        self.settings = settings
        interval = settings.outbox_relay_interval_seconds
        self._rounds_per_prune = max(1, int(_PRUNE_EVERY.total_seconds() / interval))
        requeue_after = settings.outbox_requeue_after_seconds
        self._rounds_per_sweep = max(1, int(min(_SWEEP_EVERY_MAX_SECONDS, requeue_after / 2) / interval))
        self._rounds = 0
        super().__init__("outbox-relay", interval, self.relay_round)

    def relay_round(self) -> None:
        """One round: stalled tasks requeued now and then, held units let out, what is
        due published, and old published rows pruned now and then."""
        if self.settings.outbox_requeue_after_seconds > 0 and self._rounds % self._rounds_per_sweep == 0:
            requeue_stalled(self.engine, self.settings)
        release_held(self.engine, self.publisher, self.settings)
        self.run_once()
        self._rounds += 1
        if self._rounds % self._rounds_per_prune == 0:
            prune(self.engine)

    def run_once(self) -> int:
        """One round until nothing is left that is due (a backlog drains without waiting)."""
        total = 0
        while True:
            count = relay_once(self.engine, self.publisher, self.settings)
            total += count
            if count < self.settings.outbox_relay_batch:
                return total
