"""The helpers the deployment runs: the transcoder's read-only role against the real
PostgreSQL, the notifier's source archive as the function runtime loads it, and the VM
probe for a worker without a port.

The SQL on roles stays text: role attributes, grants, passwords and role statements are
catalogue and DDL work, which the Core tables cannot say. The role's own reads and
writes are statements on the tables of ``shared.tables``."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import delete, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from shared.tables import tasks, users
from tests.support.db import count_rows
from tests.support.infra import REPO, TERRAFORM

_spec = importlib.util.spec_from_file_location("db_roles", TERRAFORM / "scripts" / "db_roles.py")
db_roles = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(db_roles)


def test_scram_verifier_has_postgres_layout_and_depends_on_the_salt():
    salt = bytes(range(16))
    verifier = db_roles.scram_sha256_verifier("Admin123", salt=salt)
    assert re.fullmatch(
        r"SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]{24}\$[A-Za-z0-9+/=]{44}:[A-Za-z0-9+/=]{44}", verifier
    )
    assert verifier == db_roles.scram_sha256_verifier("Admin123", salt=salt)
    assert verifier != db_roles.scram_sha256_verifier("Admin124", salt=salt)


@pytest.mark.parametrize("role", ["Transcoder", "tx; DROP TABLE tasks", "a-b", ""])
def test_role_names_are_plain_identifiers(role):
    engine = sqlalchemy.create_engine("postgresql+pg8000://nobody@127.0.0.1:9/none")
    with pytest.raises(ValueError):
        db_roles.apply_read_only_role(engine.connect, role, db_roles.scram_sha256_verifier("x"))


def _role_admin_url(database_url: str) -> str:
    """A URL whose role may create roles, as the application's owner role may on Cloud SQL.

    The test database's own role can (testcontainers' superuser) or the throwaway local
    cluster's superuser `postgres` is used (that cluster trusts local connections).
    """
    engine = sqlalchemy.create_engine(database_url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            allowed = connection.execute(
                text("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user")
            ).scalar_one()
    finally:
        engine.dispose()
    if allowed:
        return database_url
    url = sqlalchemy.make_url(database_url).set(username="postgres", password=None)
    return url.render_as_string(hide_password=False)


@pytest.fixture
def read_only_role(database_url):
    role = f"transcoder_{uuid.uuid4().hex[:10]}"
    password = f"Pw-{uuid.uuid4().hex}"
    engine = sqlalchemy.create_engine(_role_admin_url(database_url), poolclass=NullPool)
    try:
        yield engine, role, password
    finally:
        with engine.begin() as connection:
            exists = connection.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).first()
            if exists:
                connection.execute(text(f'DROP OWNED BY "{role}"'))
                connection.execute(text(f'DROP ROLE "{role}"'))
        engine.dispose()


def _as_role(database_url: str, role: str, password: str) -> sqlalchemy.Engine:
    url = sqlalchemy.make_url(database_url).set(username=role, password=password)
    return sqlalchemy.create_engine(url, poolclass=NullPool)


def test_transcoder_role_may_select_tasks_clips_and_parts_and_nothing_else(database_url, read_only_role):
    owner, role, password = read_only_role
    for _ in range(2):  # converges: a second run changes nothing and does not fail
        with owner.begin() as connection:
            db_roles.apply_read_only_role(connection, role, db_roles.scram_sha256_verifier(password))

    with owner.connect() as connection:
        attributes = connection.execute(
            text("SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = :r"),
            {"r": role},
        ).one()
        assert tuple(attributes) == (False, False, False, True)
        granted = connection.execute(
            text(
                "SELECT table_name, privilege_type FROM information_schema.role_table_grants WHERE grantee = :r"
            ),
            {"r": role},
        ).all()
        assert sorted(tuple(row) for row in granted) == [
            ("clips", "SELECT"),
            ("task_parts", "SELECT"),
            ("tasks", "SELECT"),
        ]

    reader = _as_role(database_url, role, password)
    try:
        assert count_rows(reader, tasks) >= 0
        with reader.connect() as connection:
            assert connection.execute(text("SHOW default_transaction_read_only")).scalar_one() == "on"
        with pytest.raises(DBAPIError, match="permission denied|read-only"), reader.begin() as connection:
            connection.execute(delete(tasks))
        with pytest.raises(DBAPIError, match="permission denied"):
            count_rows(reader, users)
    finally:
        reader.dispose()


def test_scram_verifier_matches_what_postgres_computes(read_only_role):
    owner, role, password = read_only_role
    with owner.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}"'))
        connection.execute(text("SET LOCAL password_encryption = 'scram-sha-256'"))
        connection.execute(text(f"ALTER ROLE \"{role}\" PASSWORD '{password}'"))
        stored = connection.execute(
            text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}
        ).scalar_one()
    iterations, salt = re.match(r"SCRAM-SHA-256\$(\d+):([^$]+)\$", stored).groups()
    import base64

    assert db_roles.scram_sha256_verifier(password, base64.b64decode(salt), int(iterations)) == stored


def test_transcoder_role_loses_grants_it_should_not_have(database_url, read_only_role):
    owner, role, password = read_only_role
    with owner.begin() as connection:
        db_roles.apply_read_only_role(connection, role, db_roles.scram_sha256_verifier(password))
        connection.execute(text(f'GRANT SELECT, INSERT ON TABLE users TO "{role}"'))
    with owner.begin() as connection:
        db_roles.apply_read_only_role(connection, role, db_roles.scram_sha256_verifier(password))
        granted = (
            connection.execute(
                text(
                    "SELECT DISTINCT table_name FROM information_schema.role_table_grants WHERE grantee = :r"
                ),
                {"r": role},
            )
            .scalars()
            .all()
        )
    assert sorted(granted) == ["clips", "task_parts", "tasks"]


# --- notifier source archive -------------------------------------------------------------


def _archive_patterns() -> list[str]:
    text_ = (TERRAFORM / "notifier.tf").read_text()
    patterns = re.findall(r'fileset\(local\.repo_root, "([^"]+)"\)', text_)
    assert patterns
    return patterns


def test_function_archive_carries_the_handler_and_what_it_imports():
    patterns = _archive_patterns()
    assert "shared/**/*.py" in patterns and "services/notifier/**/*.py" in patterns
    assert not any("services/api" in p or "services/transcoder" in p for p in patterns)


def test_function_entry_module_loads_on_task_event_from_the_archive_layout():
    """Lay the archive out as notifier.tf does and import `main` the way the runtime does."""
    with tempfile.TemporaryDirectory() as staging:
        root = Path(staging)
        for pattern in _archive_patterns():
            for source in REPO.glob(pattern):
                if "__pycache__" in source.parts:
                    continue
                target = root / source.relative_to(REPO)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
        shutil.copy2(TERRAFORM / "notifier" / "main.py", root / "main.py")
        probe = (
            "import importlib.util, sys\n"
            "spec = importlib.util.spec_from_file_location('main', 'main.py')\n"
            "module = importlib.util.module_from_spec(spec); sys.path.insert(0, '.')\n"
            "spec.loader.exec_module(module)\n"
            "assert callable(module.on_task_event)\n"
            "assert module.on_task_event.__module__ == 'services.notifier.main'\n"
            "assert all(not m.startswith('services.api') for m in sys.modules)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", probe],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=120,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert result.returncode == 0, result.stderr[-3000:]


# --- container unit helpers ----------------------------------------------------------------


def test_process_probe_reports_a_live_and_a_missing_process():
    spec = importlib.util.spec_from_file_location(
        "process_probe", TERRAFORM / "modules" / "container_mig" / "process_probe.py"
    )
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    marker = f"idrl-probe-{uuid.uuid4().hex}"
    assert not probe.worker_alive(marker.encode())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    try:
        # Until the child has exec'd, /proc shows the parent's command line.
        seen = False
        for _ in range(100):
            if probe.worker_alive(marker.encode()):
                seen = True
                break
            time.sleep(0.05)
        assert seen
    finally:
        sleeper.kill()
        sleeper.wait()
    assert not probe.worker_alive(marker.encode())


def test_secrets_env_refuses_malformed_assignments():
    spec = importlib.util.spec_from_file_location(
        "secrets_env", TERRAFORM / "modules" / "container_mig" / "secrets_env.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(SystemExit, match="expected NAME="):
        module.main(["DB_PASSWORD"])
