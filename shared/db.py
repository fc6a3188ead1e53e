"""The database engine: one SQLAlchemy engine (and its pool) per process and database.

A host/port database is reached with pg8000 directly (``DATABASE_URL``); when
``INSTANCE_CONNECTION_NAME`` is set, connections are opened by the Cloud SQL Python
Connector (IAM-authorized, TLS, private IP by default), as in Google's Cloud SQL samples.
Each such engine has its own connector, closed with the engine by :func:`close_engine`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy
from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine

from shared.config import Settings, get_settings

# SQLAlchemy Core has no SET TRANSACTION statement, so it stays SQL text: the first
# statement of a transaction that must not write (Core's ``postgresql_readonly`` would
# change the whole session instead, and the connection goes back to the pool).
SET_READ_ONLY = text("SET TRANSACTION READ ONLY")
# The same, for reads that must agree with each other: every statement of the transaction
# sees the snapshot its first one took (a read-only REPEATABLE READ transaction never
# fails to serialize, and costs no more than the default's snapshot per statement).
SET_READ_ONLY_SNAPSHOT = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")

_lock = threading.RLock()
# The engines get_engine made, by the settings they were made from.
_engines: dict[tuple[object, ...], Engine] = {}
# The Cloud SQL connector (google.cloud.sql.connector.Connector) of each engine that has one.
_connectors: dict[Engine, Any] = {}


def engine_key(settings: Settings) -> tuple[object, ...]:
    """Every field :func:`create_engine` reads: settings that agree on all of them get
    the same engine from :func:`get_engine`, and settings that differ in any get another."""
    return (
        settings.database_url,
        settings.instance_connection_name,
        settings.db_ip_type,
        settings.db_user,
        settings.db_password,
        settings.db_name,
        settings.db_statement_timeout_ms,
        settings.db_pool_size,
        settings.db_max_overflow,
        settings.db_pool_timeout_seconds,
        settings.db_pool_recycle_seconds,
        settings.service_name,
    )


def create_engine(settings: Settings) -> Engine:
    """Build a new engine for ``settings``; the caller closes it with :func:`close_engine`."""
    startup = {"statement_timeout": str(settings.db_statement_timeout_ms)}
    pool: dict[str, Any] = dict(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_pre_ping=True,
    )
    if settings.instance_connection_name:
        from google.cloud.sql.connector import Connector, IPTypes

        connector = Connector(ip_type=IPTypes[settings.db_ip_type.upper()], refresh_strategy="lazy")
        engine = sqlalchemy.create_engine(
            "postgresql+pg8000://", creator=_connect_through(connector, settings, startup), **pool
        )
        with _lock:
            _connectors[engine] = connector
        return engine
    if not settings.database_url:
        raise SystemExit("set DATABASE_URL or INSTANCE_CONNECTION_NAME")
    return sqlalchemy.create_engine(
        settings.database_url,
        connect_args={"startup_params": startup, "application_name": settings.service_name},
        **pool,
    )


def _connect_through(connector: Any, settings: Settings, startup: dict[str, str]) -> Callable[[], Any]:
    def connect() -> Any:
        return connector.connect(
            settings.instance_connection_name,
            "pg8000",
            user=settings.db_user,
            password=settings.db_password,
            db=settings.db_name,
            startup_params=startup,
            application_name=settings.service_name,
        )

    return connect


def get_engine(settings: Settings | None = None) -> Engine:
    """The process's engine for ``settings`` (or the environment's), created on first use.

    A later call with settings that name another database, or pool it differently, gets
    an engine of its own: settings are never silently ignored.
    """
    settings = settings or get_settings()
    key = engine_key(settings)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = create_engine(settings)
        return engine


def close_engine(engine: Engine) -> None:
    """Close every pooled connection of ``engine`` and its Cloud SQL connector, if any."""
    engine.dispose()
    with _lock:
        connector = _connectors.pop(engine, None)
        for key in [key for key, cached in _engines.items() if cached is engine]:
            del _engines[key]
    if connector is not None:
        connector.close()


def dispose_engine() -> None:
    """Close every engine :func:`get_engine` made, with its connector (on shutdown)."""
    with _lock:
        engines = list(_engines.values())
    for engine in engines:
        close_engine(engine)


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: the path through which the transcoder reads task state."""
    with engine.connect() as conn, conn.begin():
        conn.execute(SET_READ_ONLY)
        yield conn


@contextmanager
def read_snapshot(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction whose statements all see the database as of its first one:
    a row and the figures computed around it (a task and its place in line) agree."""
    with engine.connect() as conn, conn.begin():
        conn.execute(SET_READ_ONLY_SNAPSHOT)
        yield conn


def sqlstate(exc: sqlalchemy.exc.DBAPIError) -> str | None:
    """The PostgreSQL error code (SQLSTATE) of a failed statement, or None."""
    # pg8000 reports every server error as ProgrammingError with the fields in a dict.
    details = exc.orig.args[0] if exc.orig is not None and exc.orig.args else None
    return details.get("C") if isinstance(details, dict) else None


def ping(engine: Engine) -> None:
    """Raise if the database does not answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(select(1))
