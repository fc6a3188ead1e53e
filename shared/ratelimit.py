"""Fixed-window rate limits counted in PostgreSQL, so every replica sees the same count."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.engine import Engine

from shared.errors import RateLimited

_HIT = text(
    """
    INSERT INTO rate_limits (key, window_start, hits) VALUES (:key, :window, 1)
    ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1
    RETURNING hits
    """
)
# Several counters in one statement, each row taken in key order, so two requests never
# wait on each other's rows crosswise (no deadlock) and no request sees a partial count.
_HIT_MANY = text(
    """
    INSERT INTO rate_limits (key, window_start, hits)
    SELECT key, :window, 1 FROM unnest(CAST(:keys AS text[])) AS key ORDER BY key
    ON CONFLICT (key, window_start) DO UPDATE SET hits = rate_limits.hits + 1
    RETURNING key, hits
    """
)
_UNDO_MANY = text(
    """
    INSERT INTO rate_limits (key, window_start, hits)
    SELECT key, :window, 0 FROM unnest(CAST(:keys AS text[])) AS key ORDER BY key
    ON CONFLICT (key, window_start) DO UPDATE SET hits = greatest(rate_limits.hits - 1, 0)
    """
)
_PRUNE = text("DELETE FROM rate_limits WHERE window_start < :before")


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
