"""The database engine: one SQLAlchemy engine (and its pool) per process.

A host/port database is reached with pg8000 directly (``DATABASE_URL``); when
``INSTANCE_CONNECTION_NAME`` is set, connections are opened by the Cloud SQL Python
Connector (IAM-authorized, TLS, private IP by default), as in Google's Cloud SQL samples.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy
from sqlalchemy import select, text
from sqlalchemy.engine import Connection, Engine

from shared.config import Settings, get_settings

# SQLAlchemy Core has no SET TRANSACTION statement, so it stays SQL text: the first
# statement of a transaction that must not write (Core's ``postgresql_readonly`` would
# change the whole session instead, and the connection goes back to the pool).
SET_READ_ONLY = text("SET TRANSACTION READ ONLY")

_lock = threading.Lock()
_engine: Engine | None = None
_connector = None  # google.cloud.sql.connector.Connector, created only on Google Cloud


def create_engine(settings: Settings) -> Engine:
    """Build a new engine for ``settings`` (callers normally use :func:`get_engine`)."""
    startup = {"statement_timeout": str(settings.db_statement_timeout_ms)}
    pool = dict(
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        pool_recycle=settings.db_pool_recycle_seconds,
        pool_pre_ping=True,
    )
    if settings.instance_connection_name:
        return sqlalchemy.create_engine(
            "postgresql+pg8000://", creator=_connector_creator(settings, startup), **pool
        )
    if not settings.database_url:
        raise SystemExit("set DATABASE_URL or INSTANCE_CONNECTION_NAME")
    return sqlalchemy.create_engine(
        settings.database_url,
        connect_args={"startup_params": startup, "application_name": settings.service_name},
        **pool,
    )


def _connector_creator(settings: Settings, startup: dict[str, str]):
    global _connector
    from google.cloud.sql.connector import Connector, IPTypes

    if _connector is None:
        _connector = Connector(ip_type=IPTypes[settings.db_ip_type.upper()], refresh_strategy="lazy")
    connector = _connector

    def connect():
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
    """The process's engine, created on first use from ``settings`` (or the environment)."""
    global _engine
    with _lock:
        if _engine is None:
            _engine = create_engine(settings or get_settings())
        return _engine


def dispose_engine() -> None:
    """Close every pooled connection (on shutdown, and after fork)."""
    global _engine, _connector
    with _lock:
        if _engine is not None:
            _engine.dispose()
            _engine = None
        if _connector is not None:
            _connector.close()
            _connector = None


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction: the path through which the transcoder reads task state."""
    with engine.connect() as conn, conn.begin():
        conn.execute(SET_READ_ONLY)
        yield conn


def ping(engine: Engine) -> None:
    """Raise if the database does not answer a trivial query."""
    with engine.connect() as conn:
        conn.execute(select(1))
