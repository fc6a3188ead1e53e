"""Fixtures every test can use: a real PostgreSQL, the Pub/Sub and Cloud Storage
emulators and, on demand, the whole local stack behind its gateway.

Each backing service is started once per test run through the same launcher code
as `make up` (infra.local), on ports chosen at run time so a running `make up`
is never disturbed. An endpoint given by the environment wins (DATABASE_URL,
PUBSUB_EMULATOR_HOST, STORAGE_EMULATOR_HOST); PostgreSQL comes from testcontainers
where a Docker engine answers (Cloud Build), from a local cluster otherwise.
Pub/Sub is Google's pstest fake unless an emulator is given.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy
import tenacity
from sqlalchemy.pool import NullPool

from infra.local import (
    LocalStack,
    ManagedProcess,
    StackConfig,
    free_ports,
    run_migrations,
    start_postgres,
    start_pubsub,
    start_storage,
)
from shared.config import Settings
from shared.pubsub import delete_topology, ensure_topology
from shared.storage import delete_buckets, ensure_buckets
from shared.tokens import generate_signing_key_pem
from tests.support.names import SHARED_STACK_LIMITS, isolated_names

# Fixtures shared by several folders (media sources served on loopback), and the fault
# drills' recovery summary (registered here so it also runs where pytest-xdist prints).
pytest_plugins = ["tests.support.media", "tests.support.recoveries"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Refuse a collection in which two tests share an id: pytest-xdist hands out tests by
    id, so all but the first of them would be counted as collected and never run."""
    repeated = sorted(nodeid for nodeid, count in Counter(item.nodeid for item in items).items() if count > 1)
    if repeated:
        raise pytest.UsageError(f"{len(repeated)} test ids are shared by several tests: {repeated[:5]}")


def _unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def _test_stack_config(state_dir: Path, **fields) -> StackConfig:
    """A StackConfig whose every port is free right now."""
    return StackConfig(
        state_dir=state_dir, storage_in_memory=True, pubsub_emulator="pstest", **(free_ports() | fields)
    )


@dataclass(frozen=True)
class Emulator:
    """An emulator endpoint, and which kind answers there (`given`: from the environment)."""

    host: str
    kind: str


# --- backing services, once per run ----------------------------------------------------


@pytest.fixture(scope="session")
def stack_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Logs and state of the components the tests start (kept by pytest for the last runs)."""
    return tmp_path_factory.mktemp("local-stack")


def _docker_answers() -> bool:
    # docker.from_env() leaks its socket when no engine listens: look for one first.
    if not os.environ.get("DOCKER_HOST") and not Path("/var/run/docker.sock").exists():
        return False
    import docker
    import requests

    try:
        client = docker.from_env(timeout=3)
    except (docker.errors.DockerException, requests.RequestException):
        return False
    try:
        client.ping()
    except (docker.errors.DockerException, requests.RequestException):
        return False
    finally:
        client.close()
    return True


@pytest.fixture(scope="session")
def postgres_url(stack_state_dir: Path) -> Iterator[str]:
    """SQLAlchemy URL of a PostgreSQL database whose role may create databases."""
    if os.environ.get("DATABASE_URL"):
        yield os.environ["DATABASE_URL"]
    elif _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:15-alpine", driver="pg8000") as container:
            yield container.get_connection_url()
    else:
        # Its own folder in /tmp: the postgres user must be able to reach it.
        with tempfile.TemporaryDirectory(prefix="idrl-test-pg-") as data_dir:
            config = _test_stack_config(stack_state_dir, postgres_dir=Path(data_dir))
            url, process = start_postgres(config)
            try:
                yield url
            finally:
                process.stop()


def _start_emulator(
    start: Callable[[StackConfig], tuple[str, ManagedProcess]], config: StackConfig, variable: str, kind: str
) -> Iterator[Emulator]:
    host, process = start(config)
    try:
        # The client libraries read the emulator endpoint from the environment only;
        # it is set once for the whole session (same value for every test) and undone
        # at its end. Nothing else in os.environ is changed by the fixtures.
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(variable, host)
            yield Emulator(host, kind)
    finally:
        process.stop()


@pytest.fixture(scope="session")
def pubsub_emulator(stack_state_dir: Path) -> Iterator[Emulator]:
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        yield Emulator(os.environ["PUBSUB_EMULATOR_HOST"], "given")
        return
    config = _test_stack_config(stack_state_dir)
    yield from _start_emulator(lambda c: start_pubsub(c, "pstest"), config, "PUBSUB_EMULATOR_HOST", "pstest")


@pytest.fixture(scope="session")
def pubsub_emulator_host(pubsub_emulator: Emulator) -> str:
    """PUBSUB_EMULATOR_HOST of the run's Pub/Sub emulator (pstest unless given)."""
    return pubsub_emulator.host


@pytest.fixture(scope="session")
def storage_emulator(stack_state_dir: Path) -> Iterator[Emulator]:
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        yield Emulator(os.environ["STORAGE_EMULATOR_HOST"], "given")
        return
    config = _test_stack_config(stack_state_dir)
    yield from _start_emulator(start_storage, config, "STORAGE_EMULATOR_HOST", "gcp-storage-emulator")


@pytest.fixture(scope="session")
def storage_emulator_host(storage_emulator: Emulator) -> str:
    """STORAGE_EMULATOR_HOST of the run's Cloud Storage emulator."""
    return storage_emulator.host


# --- databases ---------------------------------------------------------------------------


def _database_url(server_url: str, name: str) -> str:
    url = sqlalchemy.make_url(server_url).set(database=name)
    return url.render_as_string(hide_password=False)


def _admin(server_url: str, statement: str) -> None:
    # CREATE/DROP DATABASE cannot run inside a transaction.
    engine = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(statement))
    finally:
        engine.dispose()


def _create_database(server_url: str, name: str, template: str | None = None) -> str:
    clause = f' TEMPLATE "{template}"' if template else ""
    _admin(server_url, f'CREATE DATABASE "{name}"{clause}')
    return _database_url(server_url, name)


def _autovacuum_in_the_way(error: BaseException) -> bool:
    # FORCE cannot end an autovacuum worker unless the role has pg_signal_backend
    # (the local cluster grants it; a DATABASE_URL server may not): wait it out.
    return isinstance(error, sqlalchemy.exc.ProgrammingError) and "42501" in str(error.orig)


@tenacity.retry(
    retry=tenacity.retry_if_exception(_autovacuum_in_the_way),
    wait=tenacity.wait_fixed(0.5),
    stop=tenacity.stop_after_attempt(20),
    reraise=True,
)
def _drop_database(server_url: str, name: str) -> None:
    _admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_template(postgres_url: str, stack_state_dir: Path) -> Iterator[str]:
    """Name of a database migrated once per run, copied for every test (much cheaper)."""
    name = _unique("idrl_template_")
    url = _create_database(postgres_url, name)
    try:
        run_migrations(StackConfig(state_dir=stack_state_dir), url)
        yield name
    finally:
        _drop_database(postgres_url, name)


@pytest.fixture
def database_url(postgres_url: str, migrated_template: str) -> Iterator[str]:
    """A fresh database at the newest schema, for this test only."""
    name = _unique("idrl_test_")
    url = _create_database(postgres_url, name, template=migrated_template)
    try:
        yield url
    finally:
        _drop_database(postgres_url, name)


# --- topics and buckets --------------------------------------------------------------------


@pytest.fixture(scope="session")
def signing_key_pem() -> str:
    return generate_signing_key_pem().decode()


@pytest.fixture
def settings(
    database_url: str, pubsub_emulator_host: str, storage_emulator_host: str, signing_key_pem: str
) -> Iterator[Settings]:
    """Settings for this test: its own database, topics, subscriptions and buckets
    (created here, deleted afterwards), and a signing key."""
    settings = Settings(
        environment="test",
        database_url=database_url,
        token_signing_key=signing_key_pem,
        **isolated_names(),
    )
    ensure_topology(settings)
    ensure_buckets(settings)
    try:
        yield settings
    finally:
        delete_topology(settings)
        delete_buckets(settings)


# --- the whole stack ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunningStack:
    """The local stack started for end-to-end tests."""

    base_url: str  # the gateway, as clients see it
    settings: Settings  # what its services run with
    stack: LocalStack

    @property
    def logs_dir(self) -> Path:
        return self.stack.config.logs_dir


@pytest.fixture(scope="session")
def local_stack(
    tmp_path_factory: pytest.TempPathFactory,
    postgres_url: str,
    migrated_template: str,
    pubsub_emulator_host: str,
    storage_emulator_host: str,
) -> Iterator[RunningStack]:
    """Every service and the nginx gateway on free ports, with their own database,
    topics and buckets; started once, only for the tests that ask for it."""
    database = _unique("idrl_stack_")
    database_url = _create_database(postgres_url, database, template=migrated_template)
    config = _test_stack_config(
        tmp_path_factory.mktemp("e2e-stack"),
        database_url=database_url,
        pubsub_emulator_host=pubsub_emulator_host,
        storage_emulator_host=storage_emulator_host,
        settings=isolated_names() | SHARED_STACK_LIMITS,
    )
    stack = LocalStack(config)
    try:
        stack.start()
        running = RunningStack(stack.base_url, Settings(**stack.settings_values), stack)
        yield running
        dead = stack.dead()
    finally:
        stack.stop()
        cleanup_settings = Settings(**stack.settings_values)
        delete_topology(cleanup_settings)
        delete_buckets(cleanup_settings)
        _drop_database(postgres_url, database)
    if dead:
        details = "\n".join(
            f"{process.name} ({process.exit_description})\n{process.log_excerpt()}" for process in dead
        )
        pytest.fail(f"local stack processes died during the tests:\n{details}")
