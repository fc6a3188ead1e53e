"""The api's per-process view of the users' session cutoffs, over a stand-in database
that only counts reads (the SQL itself runs in tests/integration/auth/test_auth_sessions.py)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from shared.errors import Unauthorized
from shared.sessions import SessionCutoffs

CUTOFF = datetime(2026, 12, 1, 12, 0, 5, 500000, tzinfo=UTC)


class CountingEngine:
    """Answers the cutoff read from ``cutoffs`` (a user missing from it does not exist)."""

    def __init__(self, cutoffs: dict[uuid.UUID, datetime | None]) -> None:
        self.cutoffs = cutoffs
        self.reads: list[uuid.UUID] = []

    def connect(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def execute(self, _statement, parameters):
        self.reads.append(parameters["id"])
        found = parameters["id"] in self.cutoffs
        row = SimpleNamespace(tokens_valid_after=self.cutoffs.get(parameters["id"])) if found else None
        return SimpleNamespace(first=lambda: row)


def _claims(seconds_after_cutoff: float) -> dict:
    return {"iat": CUTOFF.timestamp() + seconds_after_cutoff}


def test_a_cutoff_is_read_once_within_the_cache_time_and_decides_each_token():
    user = uuid.uuid4()
    engine = CountingEngine({user: CUTOFF})
    cutoffs = SessionCutoffs(engine, cache_seconds=30)
    cutoffs.require_live(user, _claims(0.000001))
    with pytest.raises(Unauthorized) as refused:
        cutoffs.require_live(user, _claims(-0.000001))
    assert refused.value.code == "session_ended"
    assert engine.reads == [user]


def test_with_no_cache_time_every_check_reads_the_cutoff():
    user = uuid.uuid4()
    engine = CountingEngine({user: None})
    cutoffs = SessionCutoffs(engine, cache_seconds=0)
    for _ in range(3):
        cutoffs.require_live(user, _claims(-1000))
    assert engine.reads == [user] * 3
    engine.cutoffs[user] = CUTOFF  # a logout elsewhere: seen at the next check
    with pytest.raises(Unauthorized):
        cutoffs.require_live(user, _claims(-1000))


def test_a_user_that_does_not_exist_is_401_unknown_user():
    engine = CountingEngine({})
    with pytest.raises(Unauthorized) as refused:
        SessionCutoffs(engine, cache_seconds=30).require_live(uuid.uuid4(), _claims(0))
    assert refused.value.code == "unknown_user"


def test_the_cache_holds_at_most_max_users_and_drops_the_oldest_read():
    first, second, third = (uuid.uuid4() for _ in range(3))
    engine = CountingEngine(dict.fromkeys((first, second, third)))
    cutoffs = SessionCutoffs(engine, cache_seconds=30, max_users=2)
    for user in (first, second, third, second, first):
        cutoffs.require_live(user, _claims(0))
    # `first` was dropped when `third` came in, so it is read again; `second` was kept.
    assert engine.reads == [first, second, third, first]
