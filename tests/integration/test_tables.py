"""shared/tables.py describes the schema the migrations build, column for column.

Two comparisons against a freshly migrated database (the `database_url` fixture: a copy
of the template migrated once per run):

- Alembic's autogenerate comparison (`compare_metadata`, with `compare_type` and
  `compare_server_default`): tables, columns, types, nullability, server defaults,
  primary keys, foreign key columns, unique constraints and indexes, expression indexes
  such as `lower(email)` included, and a foreign key's `ON DELETE`. It does not look
  at CHECK constraints or at the predicate of a partial index (`WHERE deleted_at IS NULL`).
- PostgreSQL's own rendering: the Core tables are created in a separate schema of the
  same database, and the catalog's definitions of both schemas are compared as text:
  every column (type, NOT NULL, default), every constraint (`pg_get_constraintdef`:
  CHECKs and `ON DELETE CASCADE` too) and every index (`pg_get_indexdef`: partial and
  expression indexes). PostgreSQL normalizes both sides the same way, so a CHECK written
  `status IN (...)` in one and `status = ANY (ARRAY[...])` in the other still agree.

Comments, grants, sequences' own settings and Alembic's version table are not compared.
The last test alters a copy of the metadata in each of those ways: PostgreSQL's rendering
reports every change, and Alembic's exactly the ones it covers, so neither comparison can
pass by comparing nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Constraint,
    DateTime,
    Index,
    Integer,
    MetaData,
    Table,
    func,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.pool import NullPool

from shared.tables import metadata

CORE_SCHEMA = "core_tables"

# One row per column, constraint and index of a schema, as PostgreSQL renders it (text:
# it reads the system catalogues, which the Core tables do not describe; so do the
# schema statements below).
_CATALOG = text(
    """
    SELECT 'column', c.relname || '.' || a.attname,
           format_type(a.atttypid, a.atttypmod)
           || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
           || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid AND c.relkind = 'r'
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE n.nspname = :schema AND a.attnum > 0 AND NOT a.attisdropped AND c.relname <> 'alembic_version'
    UNION ALL
    SELECT 'constraint', c.relname || '.' || con.conname, pg_get_constraintdef(con.oid)
    FROM pg_constraint con
    JOIN pg_class c ON c.oid = con.conrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = :schema AND c.relname <> 'alembic_version'
    UNION ALL
    SELECT 'index', tablename || '.' || indexname, indexdef
    FROM pg_indexes
    WHERE schemaname = :schema AND tablename <> 'alembic_version'
    """
)


@pytest.fixture
def connection(database_url: str) -> Iterator[Connection]:
    engine = sqlalchemy.create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def alembic_differences(conn: Connection, tables: MetaData) -> list[object]:
    """What Alembic's autogenerate would change to make the database match ``tables``."""
    with conn.begin():
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, tables)


def _catalog(conn: Connection, schema: str) -> dict[tuple[str, str], str]:
    rows = conn.execute(_CATALOG, {"schema": schema})
    # Names of tables, sequences and referenced tables appear qualified by schema outside
    # the search path: drop the qualifier so both schemas read alike.
    return {(kind, name): definition.replace(f"{schema}.", "") for kind, name, definition in rows}


def catalog_differences(conn: Connection, tables: MetaData) -> dict[tuple[str, str], tuple[str | None, ...]]:
    """Columns, constraints and indexes that differ between the migrated schema and
    ``tables`` created in a schema of its own, as (migrated, core) definitions."""
    with conn.begin():
        conn.execute(text(f"DROP SCHEMA IF EXISTS {CORE_SCHEMA} CASCADE"))
        conn.execute(text(f"CREATE SCHEMA {CORE_SCHEMA}"))
        tables.create_all(conn.execution_options(schema_translate_map={None: CORE_SCHEMA}))
        migrated, core = _catalog(conn, "public"), _catalog(conn, CORE_SCHEMA)
        conn.execute(text(f"DROP SCHEMA {CORE_SCHEMA} CASCADE"))
    return {
        key: (migrated.get(key), core.get(key))
        for key in migrated.keys() | core.keys()
        if migrated.get(key) != core.get(key)
    }


def test_alembic_finds_no_difference_between_the_core_tables_and_the_migrations(connection):
    assert alembic_differences(connection, metadata) == []


def test_postgresql_renders_the_core_tables_as_the_migrations_create_them(connection):
    differences = catalog_differences(connection, metadata)

    assert differences == {}
    # The comparison saw the schema, not two empty ones.
    with connection.begin():
        assert len(_catalog(connection, "public")) > 60


def _copy() -> MetaData:
    copy = MetaData()
    for table in metadata.sorted_tables:
        table.to_metadata(copy)
    return copy


def _index(tables: MetaData, table: str, name: str) -> Index:
    return next(index for index in tables.tables[table].indexes if index.name == name)


def _nullable_source_name(tables: MetaData) -> None:
    tables.tables["tasks"].c.source_name.nullable = False


def _integer_progress(tables: MetaData) -> None:
    tables.tables["tasks"].c.progress.type = Integer()


def _naive_created_at(tables: MetaData) -> None:
    tables.tables["tasks"].c.created_at.type = DateTime(timezone=False)


def _other_status_default(tables: MetaData) -> None:
    tables.tables["tasks"].c.status.server_default = sqlalchemy.DefaultClause(text("'processing'"))


def _no_uuid_default(tables: MetaData) -> None:
    tables.tables["users"].c.id.server_default = None


def _extra_column(tables: MetaData) -> None:
    tables.tables["users"].append_column(Column("quota_bytes", BigInteger))


def _missing_index(tables: MetaData) -> None:
    tasks = tables.tables["tasks"]
    tasks.indexes.discard(_index(tables, "tasks", "tasks_owner_created_idx"))


def _case_sensitive_email(tables: MetaData) -> None:
    users = tables.tables["users"]
    users.indexes.discard(_index(tables, "users", "users_email_key"))
    Index("users_email_key", users.c.email, unique=True)


def _other_partial_index_predicate(tables: MetaData) -> None:
    tasks = tables.tables["tasks"]
    index = _index(tables, "tasks", "tasks_owner_created_idx")
    index.dialect_options["postgresql"]["where"] = tasks.c.deleted_at.is_not(None)


def _no_cascade(tables: MetaData) -> None:
    (foreign_key,) = tables.tables["clips"].foreign_key_constraints
    foreign_key.ondelete = None


def _check(table: Table, name: str) -> Constraint:
    return next(constraint for constraint in table.constraints if constraint.name == name)


def _wider_progress_check(tables: MetaData) -> None:
    tasks = tables.tables["tasks"]
    tasks.constraints.discard(_check(tasks, "tasks_progress_check"))
    tasks.append_constraint(CheckConstraint("progress BETWEEN 0 AND 1000", name="tasks_progress_check"))


def _missing_check(tables: MetaData) -> None:
    users = tables.tables["users"]
    users.constraints.discard(_check(users, "users_email_check"))


def _extra_lowercase_index(tables: MetaData) -> None:
    Index("tasks_worker_idx", func.lower(tables.tables["tasks"].c.worker_id))


@pytest.mark.parametrize(
    ("alter", "alembic_sees_it"),
    [
        (_nullable_source_name, True),
        (_integer_progress, True),
        (_naive_created_at, True),
        (_other_status_default, True),
        (_no_uuid_default, True),
        (_extra_column, True),
        (_missing_index, True),
        (_case_sensitive_email, True),
        (_extra_lowercase_index, True),
        (_other_partial_index_predicate, False),
        (_no_cascade, True),
        (_wider_progress_check, False),
        (_missing_check, False),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else None,
)
def test_an_altered_definition_is_reported(connection, alter: Callable[[MetaData], None], alembic_sees_it):
    altered = _copy()
    assert alembic_differences(connection, altered) == []
    alter(altered)

    assert bool(alembic_differences(connection, altered)) is alembic_sees_it
    assert catalog_differences(connection, altered) != {}
