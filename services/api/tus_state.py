"""Resumable (tus) uploads in the database: every query is scoped to the upload's owner.

A row holds all an api replica needs to continue an upload another one began: the
length, the durable offset, the Cloud Storage session and the tail (the last bytes
received, fewer than 256 KiB, that Cloud Storage cannot take until more follow).

A PATCH holds the upload's advisory lock (``pg_try_advisory_lock(lock_key)``) on its own
connection while it streams: a second PATCH, a DELETE or the expiry sweep that finds it
taken answers 409 or skips the row. The lock is the connection's, so a process that
dies lets go of it at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy
from sqlalchemy import BigInteger, Boolean, Interval, bindparam, func, insert, select, text, update
from sqlalchemy.engine import Connection, Row

from shared.tables import tus_uploads

_COLUMNS = (
    tus_uploads.c.id,
    tus_uploads.c.owner_id,
    tus_uploads.c.lock_key,
    tus_uploads.c.upload_length,
    tus_uploads.c.upload_offset,
    tus_uploads.c.tail,
    tus_uploads.c.session_url,
    tus_uploads.c.object_uri,
    tus_uploads.c.metadata,
    tus_uploads.c.filename,
    tus_uploads.c.created_at,
    tus_uploads.c.completed_at,
    tus_uploads.c.expires_at,
)
_THIS_UPLOAD = tus_uploads.c.id == bindparam("upload")
# Advisory lock keys are 64-bit.
_KEY = bindparam("key", type_=BigInteger)
_EXPIRES = func.now() + bindparam("expiry", type_=Interval)
_FIND_OWNED = select(*_COLUMNS).where(
    _THIS_UPLOAD, tus_uploads.c.owner_id == bindparam("owner"), tus_uploads.c.expires_at > func.now()
)
_FIND_OWNED_FOR_UPDATE = _FIND_OWNED.with_for_update()
# Serializes one owner's creations so the in-progress cap holds under concurrent POSTs.
_LOCK_OWNER = select(func.pg_advisory_xact_lock(_KEY))
_IN_PROGRESS = (
    select(func.count())
    .select_from(tus_uploads)
    .where(
        tus_uploads.c.owner_id == bindparam("owner"),
        tus_uploads.c.completed_at.is_(None),
        tus_uploads.c.expires_at > func.now(),
    )
)
# The columns not named here come from the parameters.
_INSERT = (
    insert(tus_uploads)
    .values(expires_at=_EXPIRES)
    .returning(tus_uploads.c.created_at, tus_uploads.c.expires_at)
)
_TRY_LOCK = select(func.pg_try_advisory_lock(_KEY))
_TRY_XACT_LOCK = select(func.pg_try_advisory_xact_lock(_KEY))
_UNLOCK = select(func.pg_advisory_unlock(_KEY))
# Progress commits do not wait for the WAL flush: a PostgreSQL crash may lose the last
# few, leaving an older offset and tail that still match each other, and the next PATCH
# learns from the session itself what it already holds.
_ASYNC_COMMIT = text("SET LOCAL synchronous_commit TO OFF")
_SAVE_PROGRESS = (
    update(tus_uploads)
    .where(_THIS_UPLOAD)
    .values(upload_offset=bindparam("offset"), tail=bindparam("durable_tail"), updated_at=func.now())
)
# A complete upload waits for its POST /tasks as long again as the expiry setting.
_COMPLETE = (
    update(tus_uploads)
    .where(_THIS_UPLOAD)
    .values(
        upload_offset=tus_uploads.c.upload_length,
        tail=b"",
        completed_at=func.now(),
        updated_at=func.now(),
        expires_at=_EXPIRES,
    )
    .returning(tus_uploads.c.expires_at)
)
# sqlalchemy.delete by its full name: this module has a delete() of its own.
_DELETE = sqlalchemy.delete(tus_uploads).where(_THIS_UPLOAD)
# One expired row no PATCH is streaming into: a row another sweep holds is skipped, and
# so is one whose advisory lock a PATCH holds (the PATCH's own expiry check ends it).
_CLAIM_EXPIRED = (
    select(*_COLUMNS)
    .where(
        tus_uploads.c.expires_at <= func.now(),
        func.pg_try_advisory_xact_lock(tus_uploads.c.lock_key, type_=Boolean),
    )
    .order_by(tus_uploads.c.expires_at)
    .limit(1)
    .with_for_update(skip_locked=True)
)


@dataclass(frozen=True)
class TusUpload:
    """A resumable upload as its owner's requests see it."""

    id: uuid.UUID
    owner_id: uuid.UUID
    lock_key: int
    upload_length: int
    upload_offset: int
    tail: bytes
    session_url: str
    object_uri: str
    metadata: str
    filename: str | None
    created_at: datetime
    completed_at: datetime | None
    expires_at: datetime

    @classmethod
    def from_row(cls, row: Row) -> TusUpload:
        values = row._asdict()
        values["tail"] = bytes(values["tail"])
        return cls(**values)

    @property
    def complete(self) -> bool:
        return self.completed_at is not None


def lock_key(upload_id: uuid.UUID) -> int:
    """The advisory lock key of an upload: the first 64 bits of its id."""
    return int.from_bytes(upload_id.bytes[:8], "big", signed=True)


def _owner_lock_key(owner_id: uuid.UUID) -> int:
    # The id's last 64 bits, so an owner's key never equals one of its uploads' keys.
    return int.from_bytes(owner_id.bytes[8:], "big", signed=True)


def find_owned(
    conn: Connection, upload_id: uuid.UUID, owner_id: uuid.UUID, *, for_update: bool = False
) -> TusUpload | None:
    """The owner's upload unless it expired; None otherwise."""
    query = _FIND_OWNED_FOR_UPDATE if for_update else _FIND_OWNED
    row = conn.execute(query, {"upload": upload_id, "owner": owner_id}).first()
    return TusUpload.from_row(row) if row else None


def uploads_in_progress(conn: Connection, owner_id: uuid.UUID) -> int:
    """How many incomplete uploads the owner holds, with the owner's creation lock taken
    for the rest of the caller's transaction."""
    conn.execute(_LOCK_OWNER, {"key": _owner_lock_key(owner_id)})
    return conn.execute(_IN_PROGRESS, {"owner": owner_id}).scalar_one()


@dataclass(frozen=True)
class NewUpload:
    id: uuid.UUID
    owner_id: uuid.UUID
    upload_length: int
    session_url: str
    object_uri: str
    metadata: str
    filename: str | None


def create(conn: Connection, new: NewUpload, expiry: timedelta) -> tuple[datetime, datetime]:
    """Store a new upload at offset 0; returns its creation and expiry times."""
    row = conn.execute(
        _INSERT,
        {
            "id": new.id,
            "owner_id": new.owner_id,
            "lock_key": lock_key(new.id),
            "upload_length": new.upload_length,
            "session_url": new.session_url,
            "object_uri": new.object_uri,
            "metadata": new.metadata,
            "filename": new.filename,
            "expiry": expiry,
        },
    ).one()
    return row.created_at, row.expires_at


def try_lock(conn: Connection, upload: TusUpload) -> bool:
    """Take the upload's streaming lock on ``conn`` (held until :func:`unlock` or the
    connection ends); False when another request holds it."""
    return bool(conn.execute(_TRY_LOCK, {"key": upload.lock_key}).scalar_one())


def try_xact_lock(conn: Connection, upload: TusUpload) -> bool:
    """The same lock for the rest of the caller's transaction (DELETE, submission)."""
    return bool(conn.execute(_TRY_XACT_LOCK, {"key": upload.lock_key}).scalar_one())


def unlock(conn: Connection, upload: TusUpload) -> None:
    conn.execute(_UNLOCK, {"key": upload.lock_key})


def save_progress(conn: Connection, upload_id: uuid.UUID, offset: int, tail: bytes) -> None:
    """Record the durable offset and tail (the caller commits)."""
    conn.execute(_ASYNC_COMMIT)
    conn.execute(_SAVE_PROGRESS, {"upload": upload_id, "offset": offset, "durable_tail": tail})


def mark_complete(conn: Connection, upload_id: uuid.UUID, expiry: timedelta) -> datetime:
    """Record that Cloud Storage holds the whole object; returns the new expiry."""
    return conn.execute(_COMPLETE, {"upload": upload_id, "expiry": expiry}).scalar_one()


def delete(conn: Connection, upload_id: uuid.UUID) -> None:
    conn.execute(_DELETE, {"upload": upload_id})


def claim_expired(conn: Connection) -> TusUpload | None:
    """One expired upload, locked for the caller's transaction; None when none is due."""
    row = conn.execute(_CLAIM_EXPIRED).first()
    return TusUpload.from_row(row) if row else None
