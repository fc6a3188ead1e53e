"""The transactional outbox: events are written with the change that causes them and
published afterwards, so a crash or a Pub/Sub outage delays a message but never loses it.

:func:`enqueue` runs inside the transaction that creates or cancels a task. After the
commit the request publishes the row at once (:func:`publish_committed`); a relay thread
in every api process (:class:`OutboxRelay`) republishes rows still unmarked after
``outbox_republish_after_seconds``, claiming them with ``FOR UPDATE SKIP LOCKED`` so
replicas never publish the same row at the same moment. A row may still be published
twice (a crash after the publish, before the mark): every consumer is idempotent.

Each user has at most ``max_tasks_in_flight_per_user`` tasks in flight: dispatched (their
TaskSubmitted let out to the workers) and not finished. A task submitted past that is
stored with its row but held (``tasks.dispatched_at`` is NULL): the request does not
publish it, the relay never claims it, and each relay round lets out the oldest held
tasks of every user who has a free slot again (:func:`release_held`). Deleting a held task
removes its unpublished row in the same transaction, so it is never published.

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
from sqlalchemy import Interval, Text, Uuid, and_, bindparam, cast, delete, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import SQLAlchemyError

from shared.config import Settings
from shared.events import Event, encode
from shared.lifecycle import TaskStatus
from shared.logging import about_task, task_logger
from shared.periodic import PeriodicThread
from shared.pubsub import Publisher
from shared.tables import outbox, tasks, users

log = task_logger(__name__)

# Published rows are kept a while for inspection, then pruned.
_KEEP_PUBLISHED = timedelta(days=1)
_PRUNE_EVERY = timedelta(hours=1)

_INSERT = insert(outbox).returning(outbox.c.id)
# The task a TaskSubmitted row submits (rows of other events name no task to dispatch).
_IS_SUBMITTED = outbox.c.attributes["event_type"].astext == "TaskSubmitted"
_ROW_TASK_ID = outbox.c.attributes["task_id"].astext
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
# A task in flight holds one of its owner's slots; a held task waits for one. Both are
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
_IN_FLIGHT = select(func.count()).where(tasks.c.owner_id == bindparam("owner"), IN_FLIGHT_TASK)
# Owners with held tasks and a free slot (owners still full are not even looked at, so
# a crowd of them never starves the others out of a batch).
_HELD = select(tasks.c.owner_id).where(HELD_TASK).distinct().subquery("held")
_OWNERS_WITH_ROOM = (
    select(_HELD.c.owner_id)
    .where(
        select(func.count()).where(tasks.c.owner_id == _HELD.c.owner_id, IN_FLIGHT_TASK).scalar_subquery()
        < bindparam("cap")
    )
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
# The unpublished TaskSubmitted rows of the tasks ``:task_ids``.
_UNPUBLISHED_SUBMITTED = and_(
    outbox.c.published_at.is_(None), _IS_SUBMITTED, _ROW_TASK_ID.in_(bindparam("task_ids", expanding=True))
)
_SUBMITTED_ROWS = (
    select(outbox.c.id, outbox.c.topic, outbox.c.data, outbox.c.attributes)
    .where(_UNPUBLISHED_SUBMITTED)
    .order_by(outbox.c.id)
)
_WITHDRAW_SUBMITTED = delete(outbox).where(_UNPUBLISHED_SUBMITTED)

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
    """How many of the owner's tasks are dispatched and not finished (nor deleted)."""
    return int(conn.execute(_IN_FLIGHT, {"owner": owner_id}).scalar_one())


def withdraw_submitted(conn: Connection, task_id: object) -> int:
    """Remove a canceled task's TaskSubmitted if it is not published yet (a held task's
    always is not), so no worker ever receives it; returns how many rows went."""
    return conn.execute(_WITHDRAW_SUBMITTED, {"task_ids": [str(task_id)]}).rowcount


def _message(row: Row[*tuple[Any, ...]]) -> OutboxMessage:
    attributes = row.attributes if isinstance(row.attributes, dict) else json.loads(row.attributes)
    return OutboxMessage(row.id, row.topic, bytes(row.data), attributes)


def release_held(engine: Engine, publisher: Publisher, settings: Settings) -> int:
    """Dispatch the oldest held tasks of every owner with free slots and publish their
    TaskSubmitted; returns how many tasks were dispatched.

    Each owner is decided under the owner's lock, so two replicas never fill the same
    free slot twice. A publish that fails leaves the dispatched row to the relay.
    """
    cap = settings.max_tasks_in_flight_per_user
    with engine.connect() as conn:
        owners = (
            conn.execute(_OWNERS_WITH_ROOM, {"cap": cap, "batch": settings.outbox_relay_batch})
            .scalars()
            .all()
        )
    dispatched = 0
    for owner in owners:
        with engine.begin() as conn:
            if not lock_owner(conn, owner):
                continue
            free = cap - in_flight(conn, owner)
            if free <= 0:
                continue
            task_ids = conn.execute(_DISPATCH_OLDEST_HELD, {"owner": owner, "free": free}).scalars().all()
            if not task_ids:
                continue
            messages = [_message(row) for row in conn.execute(_SUBMITTED_ROWS, {"task_ids": task_ids})]
        for task_id in task_ids:
            with about_task(task_id):
                log.info("task dispatched: its owner has a free slot again")
        dispatched += len(task_ids)
        publish_committed(engine, publisher, settings, messages)
    return dispatched


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
    """A daemon thread that, every ``outbox_relay_interval_seconds``, lets out held tasks
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
        """One round: stalled tasks requeued now and then, held tasks let out, what is
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
