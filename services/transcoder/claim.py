"""A worker's claim on a task (or on one part of it), and what it reads of the task
while it holds it.

The claim is a PostgreSQL session advisory lock keyed by the task id (and the part's
index), taken on a connection the worker holds while it works. A second worker given the same task cannot
take it and hands its copy back; if the first worker dies, its connection closes and the
claim goes with it. The claim is a lock, not a write: it works in a read-only
transaction and under a role that may only SELECT.
"""

from __future__ import annotations

import contextvars
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import BigInteger, Integer, bindparam, exists, func, literal, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.sql.elements import BindParameter

from services.transcoder.decisions import StopReason, was_canceled
from services.transcoder.runner import StopSignal
from shared.db import SET_READ_ONLY, read_only
from shared.events import ClipOutput
from shared.lifecycle import TaskStatus
from shared.logging import task_logger
from shared.tables import TASK_CLIPS, task_parts, tasks

log = task_logger(__name__)

_Read = TypeVar("_Read")

_PART_ATTEMPT = select(task_parts.c.attempt).where(
    task_parts.c.task_id == bindparam("id"), task_parts.c.index == bindparam("index")
)
_TASK_STATE = select(
    tasks.c.status,
    tasks.c.attempt,
    tasks.c.deleted_at.is_not(None),
    exists().where(task_parts.c.task_id == tasks.c.id),
).where(tasks.c.id == bindparam("id"))


@dataclass(frozen=True)
class TaskState:
    """The fields of a task row the worker decides by."""

    status: TaskStatus
    attempt: int
    deleted: bool
    # Its parts were handed to the fleet (the notifier holds a row for each).
    handed_out: bool = False

    @property
    def settled(self) -> bool:
        """Nothing left to do for this task."""
        return self.deleted or self.status.is_final


def _read_state(conn: Connection, task_id: uuid.UUID) -> TaskState | None:
    row = conn.execute(_TASK_STATE, {"id": task_id}).first()
    if row is None:
        return None
    return TaskState(TaskStatus(row[0]), int(row[1]), bool(row[2]), bool(row[3]))


def read_task_state(engine: Engine, task_id: uuid.UUID) -> TaskState | None:
    """The task's status, attempt and deletion, read through the read-only path."""
    with read_only(engine) as conn:
        return _read_state(conn, task_id)


class ClaimLost(Exception):
    """The database session holding a task's claim failed: the lock may be gone."""


class TaskClaim:
    """This worker's claim on a task, or with ``part`` on that part of it: a session
    advisory lock on a connection held for as long as the work lasts. Reads of the task
    go through the same connection, so a broken connection (which releases the lock) is
    noticed at the next read. A part's claim leaves the task's free: the task's other
    parts are made at the same time."""

    def __init__(self, engine: Engine, task_id: uuid.UUID, part: int | None = None) -> None:
        self._engine = engine
        self.task_id = task_id
        self.part = part
        # A task's key is one bigint, the first half of its UUID; a part's is two
        # integers, the UUID's first quarter and the index: PostgreSQL keeps the one-key
        # and the two-key locks apart, so a part's claim never meets a task's.
        self._keys: tuple[BindParameter[int], ...]
        if part is None:
            self._keys = (literal(int.from_bytes(task_id.bytes[:8], "big", signed=True), BigInteger),)
        else:
            self._keys = (
                literal(int.from_bytes(task_id.bytes[:4], "big", signed=True), Integer),
                literal(part, Integer),
            )
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        conn = self._engine.connect()
        try:
            with conn.begin():
                conn.execute(SET_READ_ONLY)
                taken = conn.execute(select(func.pg_try_advisory_lock(*self._keys))).scalar_one()
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    def state(self) -> TaskState | None:
        """Re-read the task on the claim's connection; :class:`ClaimLost` if the
        connection failed, since the lock may have gone with it."""
        return self._read(lambda conn: _read_state(conn, self.task_id))

    def recorded_clips(self) -> tuple[ClipOutput, ...]:
        """The task's clips the notifier has recorded (made by earlier attempts too), read
        on the claim's connection."""
        rows = self._read(lambda conn: conn.execute(TASK_CLIPS, {"id": self.task_id}).all())
        return tuple(ClipOutput(**row._asdict()) for row in rows)

    def part_attempt(self) -> int:
        """The attempts the notifier recorded for the claimed part (0: none yet)."""
        found = self._read(
            lambda conn: conn.execute(_PART_ATTEMPT, {"id": self.task_id, "index": self.part}).scalar()
        )
        return int(found or 0)

    def _read(self, query: Callable[[Connection], _Read]) -> _Read:
        """``query`` in a read-only transaction on the claim's connection."""
        if self._conn is None:
            raise ClaimLost("the claim is not held")
        with self._lock:
            try:
                with self._conn.begin():
                    self._conn.execute(SET_READ_ONLY)
                    return query(self._conn)
            except (SQLAlchemyError, OSError) as exc:
                # pg8000 lets a reset socket's OSError through unwrapped.
                raise ClaimLost(f"the claim's database session failed: {_first_line(exc)}") from exc

    def release(self) -> None:
        if self._conn is None:
            return
        with self._lock:
            # Closing the session is what releases a session lock; the connection is
            # discarded rather than pooled, so no pooled connection ever holds one.
            self._conn.invalidate()
            self._conn.close()
            self._conn = None

    @contextmanager
    def watch(self, stop: StopSignal, every: float) -> Iterator[None]:
        """Re-read the task every ``every`` seconds while the block runs, and stop the
        run when it is canceled or deleted, or when the claim is lost; a part's run also
        when its task is settled elsewhere (another part failed it)."""
        done = threading.Event()
        # The watching thread logs about the same task as the one that watches.
        context = contextvars.copy_context()
        watcher = threading.Thread(
            target=context.run,
            args=(self._watch, stop, every, done),
            daemon=True,
            name=f"watch-{self.task_id}",
        )
        watcher.start()
        try:
            yield
        finally:
            done.set()
            watcher.join()

    def _watch(self, stop: StopSignal, every: float, done: threading.Event) -> None:
        while not done.wait(every):
            try:
                state = self.state()
            except ClaimLost as exc:
                # Another worker may take the task now, so this one must not finish it.
                log.warning("%s; stopping", exc)
                stop.set(StopReason.LOST_CLAIM)
                return
            if was_canceled(state):
                stop.set(StopReason.CANCELED)
                return
            if self.part is not None and state is not None and state.settled:
                stop.set(StopReason.SETTLED)
                return

    def wait_recorded(self, timeout: float, every: float) -> bool:
        """Re-read the task until the notifier has recorded a final status (or it is
        gone), at most ``timeout`` seconds; False if it had not by then."""
        return self.poll(lambda: _gone_or_settled(self.state()), timeout, every)

    def wait_handed_out(self, timeout: float, every: float) -> bool:
        """Re-read the task until the notifier has recorded its parts handed out (or it
        is gone or settled), at most ``timeout`` seconds; False if it had not by then."""
        return self.poll(lambda: _handed_out_or_done(self.state()), timeout, every)

    def poll(self, read: Callable[[], _Read], timeout: float, every: float) -> _Read:
        """``read`` (a read on the claim's connection) every ``every`` seconds until what
        it returns is truthy, at most ``timeout`` seconds; the last value read."""
        deadline = time.monotonic() + timeout
        while not (found := read()) and time.monotonic() < deadline:
            time.sleep(every)
        return found


def _gone_or_settled(state: TaskState | None) -> bool:
    return state is None or state.settled


def _handed_out_or_done(state: TaskState | None) -> bool:
    return _gone_or_settled(state) or (state is not None and state.handed_out)


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
