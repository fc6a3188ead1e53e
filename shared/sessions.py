"""Ending a user's sessions: the cutoff before which the user's tokens no longer count.

``POST /auth/logout`` and ``POST /auth/password`` set ``users.tokens_valid_after`` to the
moment they run; a token whose ``iat`` is earlier is refused from then on, by auth at
once and by each api process within ``TOKEN_CUTOFF_CACHE_SECONDS`` (the time it may keep
a cutoff it read). Tokens carry ``iat`` to the microsecond (:func:`shared.tokens.issue_token`),
so a token issued right after a logout, in the same second, still counts.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.engine import Connection, Engine

from shared.errors import Unauthorized
from shared.tables import users
from shared.tokens import InvalidToken

_CUTOFF = select(users.c.tokens_valid_after).where(users.c.id == bindparam("id"))
# Never moved back: two replicas whose clocks differ slightly keep the later cutoff.
_AT = bindparam("at", type_=users.c.tokens_valid_after.type)
_END = (
    update(users)
    .where(users.c.id == bindparam("user_id"))
    .values(tokens_valid_after=func.greatest(func.coalesce(users.c.tokens_valid_after, _AT), _AT))
)
# Stands for "no such user" in the cache.
_NO_USER = object()


def end_sessions(conn: Connection, user_id: uuid.UUID, at: datetime) -> None:
    """Refuse from now on every token of ``user_id`` issued before ``at``."""
    conn.execute(_END, {"user_id": user_id, "at": at})


def ended(claims: dict, cutoff: datetime | None) -> bool:
    """Whether a token with these claims was issued before the user's cutoff. A token
    issued at the cutoff itself counts (the cutoff is taken before any later token)."""
    return cutoff is not None and float(claims["iat"]) < cutoff.timestamp()


def _require_live(cutoff: datetime | None | object, claims: dict) -> None:
    if cutoff is _NO_USER:
        raise Unauthorized("the token's user does not exist", code="unknown_user")
    if isinstance(cutoff, datetime) and ended(claims, cutoff):
        raise InvalidToken("the session of this token has ended: log in again", code="session_ended")


def require_live_session(conn: Connection, user_id: uuid.UUID, claims: dict) -> None:
    """401 unless ``user_id`` exists and the token was issued at or after its cutoff
    (read now, not cached: for auth, which changes the cutoff)."""
    row = conn.execute(_CUTOFF, {"id": user_id}).first()
    _require_live(_NO_USER if row is None else row.tokens_valid_after, claims)


class SessionCutoffs:
    """The api's per-process view of the users' cutoffs: one primary-key read per user,
    kept for at most ``cache_seconds``, so a logout takes effect on every api process
    within that time without a read on every request."""

    def __init__(self, engine: Engine, cache_seconds: float, max_users: int = 10_000) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        self._max_users = max_users
        self._read: dict[uuid.UUID, tuple[float, object]] = {}
        self._lock = threading.Lock()

    def _cutoff(self, user_id: uuid.UUID) -> datetime | None | object:
        now = time.monotonic()
        with self._lock:
            cached = self._read.get(user_id)
        if cached is not None and now - cached[0] < self._cache_seconds:
            return cached[1]
        with self._engine.connect() as conn:
            row = conn.execute(_CUTOFF, {"id": user_id}).first()
        cutoff = _NO_USER if row is None else row.tokens_valid_after
        with self._lock:
            self._read.pop(user_id, None)
            if len(self._read) >= self._max_users:
                # The oldest read goes first (dicts keep insertion order).
                self._read.pop(next(iter(self._read)))
            self._read[user_id] = (now, cutoff)
        return cutoff

    def require_live(self, user_id: uuid.UUID, claims: dict) -> None:
        """401 unless ``user_id`` exists and the token was issued at or after its cutoff
        as this process last read it (at most ``cache_seconds`` ago)."""
        _require_live(self._cutoff(user_id), claims)
