"""The process's engines: one per database settings, and each closed with its Cloud SQL
connector."""

from __future__ import annotations

import pytest

from shared import db
from shared.config import Settings

A = "postgresql+pg8000://idrl:idrl@127.0.0.1:5433/a"
B = "postgresql+pg8000://idrl:idrl@127.0.0.1:5433/b"


@pytest.fixture(autouse=True)
def _no_engines_left():
    yield
    db.dispose_engine()


def test_the_same_settings_get_the_same_engine():
    assert db.get_engine(Settings(database_url=A)) is db.get_engine(Settings(database_url=A))


def test_other_settings_never_get_the_first_engine():
    first = db.get_engine(Settings(database_url=A))
    other_database = db.get_engine(Settings(database_url=B))
    other_pool = db.get_engine(Settings(database_url=A, db_pool_size=1))
    assert other_database is not first and other_database.url.database == "b"
    assert other_pool is not first and other_pool.pool.size() == 1
    assert first.url.database == "a" and first.pool.size() == Settings().db_pool_size


def test_a_closed_engine_is_not_handed_out_again():
    first = db.get_engine(Settings(database_url=A))
    db.close_engine(first)
    assert db.get_engine(Settings(database_url=A)) is not first


class _FakeConnector:
    made: list[_FakeConnector] = []

    def __init__(self, **options) -> None:
        self.options = options
        self.closed = False
        _FakeConnector.made.append(self)

    def close(self) -> None:
        self.closed = True


def test_closing_an_engine_closes_its_cloud_sql_connector(monkeypatch):
    from google.cloud.sql import connector

    monkeypatch.setattr(connector, "Connector", _FakeConnector)
    _FakeConnector.made.clear()
    settings = Settings(database_url=None, instance_connection_name="project:region:instance")
    first, second = db.create_engine(settings), db.create_engine(settings)
    assert len(_FakeConnector.made) == 2  # each engine has its own
    db.close_engine(first)
    assert [made.closed for made in _FakeConnector.made] == [True, False]
    db.close_engine(second)
    assert _FakeConnector.made[1].closed


def test_dispose_engine_closes_the_connectors_of_the_engines_it_made(monkeypatch):
    from google.cloud.sql import connector

    monkeypatch.setattr(connector, "Connector", _FakeConnector)
    _FakeConnector.made.clear()
    db.get_engine(Settings(database_url=None, instance_connection_name="project:region:instance"))
    db.dispose_engine()
    assert [made.closed for made in _FakeConnector.made] == [True]
