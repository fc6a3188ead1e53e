"""Fixed-window rate limits counted in PostgreSQL, so every replica sees the same count."""

from __future__ import annotations

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
_COUNT = text("SELECT hits FROM rate_limits WHERE key = :key AND window_start = :window")
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


def check(
    engine: Engine, key: str, limit: int, window_seconds: int = 60, *, message: str = "too many requests"
) -> None:
    """Raise :class:`RateLimited` if ``key`` is already past ``limit``, without counting."""
    now = datetime.now(UTC)
    window, remaining = _window(window_seconds, now)
    with engine.connect() as conn:
        hits = conn.execute(_COUNT, {"key": key, "window": window}).scalar_one_or_none() or 0
    if hits >= limit:
        raise RateLimited(message, retry_after=remaining)
