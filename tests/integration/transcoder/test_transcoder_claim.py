"""The worker's claim on a task (a session advisory lock) against the real PostgreSQL,
including under the transcoder's production role: SELECT on tasks, read-only."""

from __future__ import annotations

import importlib.util
import uuid

import pytest
import sqlalchemy
from sqlalchemy import text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from services.transcoder.claim import ClaimLost, TaskClaim, read_task_state
from shared.lifecycle import TaskStatus
from shared.tables import tasks
from tests.support.db import cancel_task
from tests.support.worker import PROJECT_ROOT, insert_task


def _db_roles():
    path = PROJECT_ROOT / "infra" / "terraform" / "scripts" / "db_roles.py"
    spec = importlib.util.spec_from_file_location("db_roles_for_transcoder_tests", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def engine(database_url):
    engine = sqlalchemy.create_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def admin(database_url):
    """A role that may create roles and end sessions: the test database's own, or the
    local throwaway cluster's superuser."""
    engine = sqlalchemy.create_engine(database_url, poolclass=NullPool)
    with engine.connect() as conn:
        # A role attribute from the catalogue: not one of the platform's tables.
        allowed = conn.execute(
            text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
        ).scalar_one()
    if not allowed:
        engine.dispose()
        url = sqlalchemy.make_url(database_url).set(username="postgres", password=None)
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def task(engine):
    return insert_task(engine, "https://videos.example/run.mp4")


def test_only_one_claim_at_a_time(engine, task):
    first, second = TaskClaim(engine, task.task_id), TaskClaim(engine, task.task_id)
    assert first.try_acquire()
    try:
        assert not second.try_acquire()
        assert TaskClaim(engine, uuid.uuid4()).try_acquire()  # other tasks are not held up
        assert first.state().status is TaskStatus.QUEUED
    finally:
        first.release()
    assert second.try_acquire()
    second.release()


def test_a_claim_dies_with_its_session(engine, admin, task):
    first = TaskClaim(engine, task.task_id)
    assert first.try_acquire()
    with admin.begin() as conn:
        # The server's lock catalogue and a backend signal: not the platform's tables.
        ended = (
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks "
                    "WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database "
                    "WHERE datname = current_database())"
                )
            )
            .scalars()
            .all()
        )
    assert ended == [True]
    with pytest.raises(ClaimLost):
        first.state()  # the worker notices at its next re-read and stops
    first.release()
    second = TaskClaim(engine, task.task_id)
    assert second.try_acquire()
    second.release()


def test_the_claim_and_reads_work_under_the_read_only_role(database_url, engine, admin, task):
    db_roles = _db_roles()
    role, password = f"transcoder_{uuid.uuid4().hex[:10]}", f"Pw-{uuid.uuid4().hex}"
    with admin.begin() as conn:
        db_roles.apply_read_only_role(conn, role, db_roles.scram_sha256_verifier(password))
    reader = sqlalchemy.create_engine(sqlalchemy.make_url(database_url).set(username=role, password=password))
    try:
        claim = TaskClaim(reader, task.task_id)
        assert claim.try_acquire()
        assert not TaskClaim(engine, task.task_id).try_acquire()  # seen by every role
        cancel_task(engine, task.task_id)
        state = claim.state()
        assert (state.status, state.deleted) == (TaskStatus.CANCELED, True)
        assert read_task_state(reader, task.task_id) == state
        with pytest.raises(DBAPIError, match="read-only|permission denied"), reader.begin() as conn:
            conn.execute(update(tasks).values(status="queued"))
        claim.release()
    finally:
        reader.dispose()
        with admin.begin() as conn:
            # Role statements: SQL the Core tables do not build.
            conn.execute(text(f'DROP OWNED BY "{role}"'))
            conn.execute(text(f'DROP ROLE "{role}"'))
