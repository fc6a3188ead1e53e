"""Fixed-window rate limits counted in PostgreSQL, so every replica sees the same count."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Text, bindparam, delete, func, literal, select
from sqlalchemy.dialects.postgresql import ARRAY, Insert, insert
from sqlalchemy.engine import Engine

from shared.errors import RateLimited
from shared.tables import rate_limits

_KEYS = func.unnest(bindparam("keys", type_=ARRAY(Text))).column_valued("key")


def _upsert(hits: int, on_conflict: ColumnElement[int]) -> Insert:
    """One row per key of ``:keys`` in ``:window``, starting at ``hits``; a row already
    there gets ``on_conflict`` instead. Rows are taken in key order, so two requests
    never wait on each other's rows crosswise (no deadlock)."""
    rows = select(_KEYS, bindparam("window", type_=rate_limits.c.window_start.type), literal(hits))
    return (
        insert(rate_limits)
        .from_select(["key", "window_start", "hits"], rows.order_by(_KEYS))
        .on_conflict_do_update(index_elements=["key", "window_start"], set_={"hits": on_conflict})
    )


_HIT = (
    insert(rate_limits)
    .values(key=bindparam("key"), window_start=bindparam("window"), hits=1)
    .on_conflict_do_update(index_elements=["key", "window_start"], set_={"hits": rate_limits.c.hits + 1})
    .returning(rate_limits.c.hits)
)
# Several counters in one statement, so no request sees a partial count.
_HIT_MANY = _upsert(1, rate_limits.c.hits + 1).returning(rate_limits.c.key, rate_limits.c.hits)
_UNDO_MANY = _upsert(0, func.greatest(rate_limits.c.hits - 1, 0))
_PRUNE = delete(rate_limits).where(rate_limits.c.window_start < bindparam("before"))


def _window(window_seconds: int, now: datetime) -> tuple[datetime, int]:
    epoch = int(now.timestamp())
    start = epoch - epoch % window_seconds
    return datetime.fromtimestamp(start, UTC), start + window_seconds - epoch


def hit(
    engine: Engine, key: str, limit: int, window_seconds: int = 60, *, message: str = "too many requests"
) -> None:
    """Count one hit on ``key``; raise :class:`RateLimited` (429, ``Retry-After``) past
    ``limit`` hits in the current window."""
    now = datetime.now(UTC)
    window, remaining = _window(window_seconds, now)
    with engine.begin() as conn:
        hits = conn.execute(_HIT, {"key": key, "window": window}).scalar_one()
        if hits == 1:
            # First hit of a window: a good moment to drop long-finished windows.
            conn.execute(_PRUNE, {"before": datetime.fromtimestamp(now.timestamp() - 3600, UTC)})
    if hits > limit:
        raise RateLimited(message, retry_after=remaining)


@dataclass(frozen=True)
class Counted:
    """What :func:`count` counted: the hits of each key in its window, this one included."""

    hits: dict[str, int]
    window: datetime
    retry_after: int


def count(engine: Engine, keys: Iterable[str], window_seconds: int = 60) -> Counted:
    """Count one hit on each of ``keys`` in the current window, atomically and in one
    statement, and return every key's count including this hit.

    Counting before the work it limits means parallel requests each see their own
    place in the count: a burst cannot all pass a check made before any of them was
    counted. Deciding what the counts mean is the caller's.
    """
    now = datetime.now(UTC)
    window, remaining = _window(window_seconds, now)
    keys = sorted(set(keys))
    with engine.begin() as conn:
        rows = conn.execute(_HIT_MANY, {"keys": keys, "window": window}).all()
        if any(row.hits == 1 for row in rows):
            conn.execute(_PRUNE, {"before": datetime.fromtimestamp(now.timestamp() - 3600, UTC)})
    return Counted({row.key: row.hits for row in rows}, window, remaining)


def uncount(engine: Engine, counted: Counted) -> None:
    """Take back the hits :func:`count` made, in the window it made them in (an attempt
    that turned out not to be one the limit is about, such as a right password)."""
    with engine.begin() as conn:
        conn.execute(_UNDO_MANY, {"keys": sorted(counted.hits), "window": counted.window})
