"""PostgreSQL for the local stack: a throwaway cluster of our own, created on first use."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pg8000.native

from infra.local.process import ManagedProcess, StartupError
from infra.local.stack_config import LOCAL_DB_ROLE, Report, StackConfig, no_report


def postgres_bin_dir() -> Path:
    override = os.environ.get("PG_BIN")
    if override:
        return Path(override)
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if not found:
        raise StartupError(
            "PostgreSQL server binaries not found under /usr/lib/postgresql: run `make install`"
        )
    return found[-1].parent


def _postgres_user() -> str | None:
    # initdb and postgres refuse to run as root; the distribution package creates this user.
    return "postgres" if os.geteuid() == 0 else None


def _reachable_by(user: str, path: Path) -> bool:
    probe = subprocess.run(
        ["test", "-w", str(path)], user=user, group=user, extra_groups=[], check=False, cwd="/"
    )
    return probe.returncode == 0


def postgres_fallback_dir(data_dir: Path) -> Path:
    """Where the cluster of ``data_dir`` lives when the postgres user cannot reach it."""
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"idrl-pg-{digest}"


def _prepare_postgres_dir(config: StackConfig, user: str | None, report: Report) -> Path:
    data_dir = config.postgres_dir or config.state_dir / "pg"
    data_dir.mkdir(parents=True, exist_ok=True)
    if user:
        shutil.chown(data_dir, user, user)
        if not _reachable_by(user, data_dir):
            # A checkout under a private home (/root is 0700) is out of the postgres
            # user's reach; keep the cluster in a per-checkout folder it can reach.
            data_dir = postgres_fallback_dir(data_dir)
            data_dir.mkdir(mode=0o700, exist_ok=True)
            shutil.chown(data_dir, user, user)
            report(
                f"postgres: {config.state_dir} is not reachable by user {user}; cluster kept in {data_dir}"
            )
    data_dir.chmod(0o700)
    return data_dir


def _postgres_accepts(host: str, port: int) -> bool:
    try:
        connection = pg8000.native.Connection(
            "postgres", host=host, port=port, database="postgres", timeout=2
        )
    except (pg8000.exceptions.InterfaceError, pg8000.exceptions.DatabaseError, OSError):
        return False
    connection.close()
    return True


def _bootstrap_role(host: str, port: int) -> None:
    connection = pg8000.native.Connection("postgres", host=host, port=port, database="postgres", timeout=10)
    try:
        if not connection.run("SELECT 1 FROM pg_roles WHERE rolname = :name", name=LOCAL_DB_ROLE):
            connection.run(f"CREATE ROLE {LOCAL_DB_ROLE} LOGIN CREATEDB PASSWORD '{LOCAL_DB_ROLE}'")
        # DROP DATABASE ... WITH (FORCE) also ends an autovacuum worker that happens to
        # be in that database; without this membership that fails with 42501. Granted on
        # every start, so clusters created before this line get it too.
        connection.run(f"GRANT pg_signal_backend TO {LOCAL_DB_ROLE}")
        if not connection.run("SELECT 1 FROM pg_database WHERE datname = :name", name=LOCAL_DB_ROLE):
            connection.run(f"CREATE DATABASE {LOCAL_DB_ROLE} OWNER {LOCAL_DB_ROLE}")
    finally:
        connection.close()


def start_postgres(config: StackConfig, report: Report = no_report) -> tuple[str, ManagedProcess]:
    """A PostgreSQL cluster of our own (created on first use) and the role/database `idrl`.

    Returns the SQLAlchemy URL of database `idrl` (its owner may create databases).
    """
    bin_dir = postgres_bin_dir()
    user = _postgres_user()
    data_dir = _prepare_postgres_dir(config, user, report)
    log_path = config.logs_dir / "postgres.log"
    if not (data_dir / "PG_VERSION").exists():
        for leftover in data_dir.iterdir():  # a half-done initdb; the cluster is throwaway
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        report(f"postgres: creating a cluster in {data_dir}")
        initdb = ManagedProcess(
            "initdb",
            [
                bin_dir / "initdb",
                "-D",
                data_dir,
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
            log_path=log_path,
            cwd=data_dir,
            user=user,
        ).start()
        assert initdb.popen is not None
        if initdb.popen.wait(timeout=120) != 0:
            raise StartupError(f"initdb failed.\n{initdb.log_excerpt()}")
    process = ManagedProcess(
        "postgres",
        [
            bin_dir / "postgres",
            "-D",
            data_dir,
            "-p",
            config.postgres_port,
            "-c",
            f"listen_addresses={config.host}",
            "-c",
            "unix_socket_directories=",  # TCP only: no socket path to own or clash on
            "-c",
            "max_connections=300",
            # A throwaway cluster: durability traded for speed.
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
        ],
        log_path=log_path,
        cwd=data_dir,
        user=user,
        # SIGINT is PostgreSQL's fast shutdown; SIGTERM would wait for every client.
        # Only the postmaster is signalled: it stops its own backends.
        stop_signal=signal.SIGINT,
        signal_group=False,
        stop_timeout=20,
    ).start()
    try:
        process.wait_ready(lambda: _postgres_accepts(config.host, config.postgres_port), timeout=60)
        _bootstrap_role(config.host, config.postgres_port)
    except BaseException:
        process.stop()
        raise
    return config.local_database_url(), process
