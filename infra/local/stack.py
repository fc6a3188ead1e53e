"""The local stack: PostgreSQL, the Pub/Sub and Cloud Storage emulators, the services
and the nginx gateway, each a local process started by one code path.

`make up` and the test fixtures both go through the functions here, so what the
tests start is what a developer runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Self

import pg8000.native
import psutil

from infra.local.process import (
    ManagedProcess,
    StartupError,
    http_probe,
    port_bindable,
    stop_all,
    tcp_probe,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "api", "transcoder", "notifier")
PUBSUB_EMULATORS = ("auto", "pstest", "gcloud")
SIGNING_KEY_NAME = "token-signing-key.pem"
# Local throwaway cluster only: trust authentication on loopback, not a secret.
LOCAL_DB_ROLE = "idrl"

# Stop order: the gateway first, then the services, then what they depend on.
TIER_BACKING, TIER_SERVICES, TIER_GATEWAY = 0, 1, 2

Report = Callable[[str], None]


def _no_report(message: str) -> None:
    pass


@dataclass
class StackConfig:
    """Where the stack keeps its state, which ports it binds, what it starts.

    An endpoint given here (``database_url``, ``pubsub_emulator_host``,
    ``storage_emulator_host``) is used as is and nothing is started for it.
    """

    project_root: Path = PROJECT_ROOT
    state_dir: Path = PROJECT_ROOT / ".local"
    host: str = "127.0.0.1"
    gateway_port: int = 5050
    auth_port: int = 5051
    api_port: int = 5052
    postgres_port: int = 5433
    pubsub_port: int = 8085
    storage_port: int = 9023
    database_url: str | None = None
    pubsub_emulator_host: str | None = None
    storage_emulator_host: str | None = None
    pubsub_emulator: str = "auto"
    storage_in_memory: bool = False
    postgres_dir: Path | None = None
    services: Sequence[str] | None = None  # None: every service whose package exists
    transcoder_workers: int = 1
    gunicorn_workers: int = 2
    gunicorn_threads: int = 4
    # Extra Settings fields (lower-case names) for the services, e.g. per-test topics.
    settings: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable

    def __post_init__(self) -> None:
        if self.pubsub_emulator not in PUBSUB_EMULATORS:
            raise ValueError(
                f"PUBSUB_EMULATOR must be one of {', '.join(PUBSUB_EMULATORS)}, not {self.pubsub_emulator!r}"
            )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> StackConfig:
        """The `make up` configuration: defaults overridden by environment variables."""

        def number(name: str, default: int) -> int:
            value = environ.get(name, "").strip()
            if not value:
                return default
            try:
                return int(value)
            except ValueError:
                raise SystemExit(f"{name} must be an integer, not {value!r}") from None

        defaults = cls()
        services = environ.get("STACK_SERVICES", "").strip()
        state_dir = environ.get("STACK_STATE_DIR", "").strip()
        return cls(
            state_dir=Path(state_dir).resolve() if state_dir else defaults.state_dir,
            services=[name.strip() for name in services.split(",") if name.strip()] if services else None,
            gateway_port=number("GATEWAY_PORT", defaults.gateway_port),
            auth_port=number("AUTH_PORT", defaults.auth_port),
            api_port=number("API_PORT", defaults.api_port),
            postgres_port=number("POSTGRES_PORT", defaults.postgres_port),
            pubsub_port=number("PUBSUB_PORT", defaults.pubsub_port),
            storage_port=number("STORAGE_PORT", defaults.storage_port),
            database_url=environ.get("DATABASE_URL") or None,
            pubsub_emulator_host=environ.get("PUBSUB_EMULATOR_HOST") or None,
            storage_emulator_host=environ.get("STORAGE_EMULATOR_HOST") or None,
            pubsub_emulator=environ.get("PUBSUB_EMULATOR", "auto").strip() or "auto",
            transcoder_workers=number("TRANSCODER_WORKERS", defaults.transcoder_workers),
            gunicorn_workers=number("GUNICORN_WORKERS", defaults.gunicorn_workers),
            gunicorn_threads=number("GUNICORN_THREADS", defaults.gunicorn_threads),
        )

    @property
    def bin_dir(self) -> Path:
        # Shared by every stack of the checkout (tests included): one pstest build.
        return self.project_root / ".local" / "bin"

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def signing_key_path(self) -> Path:
        return self.state_dir / "keys" / SIGNING_KEY_NAME

    @property
    def state_file(self) -> Path:
        return self.state_dir / "stack.json"

    def service_names(self) -> list[str]:
        wanted = SERVICES if self.services is None else self.services
        return [name for name in wanted if (self.project_root / "services" / name / "__init__.py").exists()]

    def local_database_url(self) -> str:
        return (
            f"postgresql+pg8000://{LOCAL_DB_ROLE}:{LOCAL_DB_ROLE}@{self.host}:{self.postgres_port}"
            f"/{LOCAL_DB_ROLE}"
        )


# --- one-shot steps -------------------------------------------------------------------


def run_step(
    name: str, argv: Sequence[str], *, config: StackConfig, env: Mapping[str, str], timeout: float = 300
) -> None:
    """Run a one-shot command, output appended to its log; StartupError if it fails."""
    log_path = config.logs_dir / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== {name}: {' '.join(map(str, argv))}\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                [str(arg) for arg in argv],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=config.project_root,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise StartupError(f"{name} did not finish within {timeout:.0f} s; see {log_path}") from None
    if result.returncode != 0:
        tail = "\n".join(f"    {line}" for line in log_path.read_text(errors="replace").splitlines()[-25:])
        raise StartupError(
            f"{name} failed (exit code {result.returncode}); last lines of {log_path}:\n{tail}"
        )


def base_environment(config: StackConfig) -> dict[str, str]:
    """The environment every child inherits: ours, plus the project on the import path."""
    env = dict(os.environ)
    python_path = [str(config.project_root)]
    if env.get("PYTHONPATH"):
        python_path.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(python_path)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_migrations(config: StackConfig, database_url: str) -> None:
    """Upgrade ``database_url`` to the newest schema (``python -m shared.migrations``)."""
    env = base_environment(config) | {"DATABASE_URL": database_url}
    run_step("migrations", [config.python, "-m", "shared.migrations"], config=config, env=env)


# --- PostgreSQL -----------------------------------------------------------------------


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


def start_postgres(config: StackConfig, report: Report = _no_report) -> tuple[str, ManagedProcess]:
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


# --- Pub/Sub --------------------------------------------------------------------------


def build_pstest(config: StackConfig) -> Path:
    """Build `.local/bin/pstest` from infra/local/pstest; a no-op when the source is unchanged."""
    source_dir = config.project_root / "infra" / "local" / "pstest"
    binary = config.bin_dir / "pstest"
    stamp = config.bin_dir / "pstest.sha256"
    digest = hashlib.sha256()
    for source in sorted(source_dir.glob("*.go")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    if binary.exists() and stamp.exists() and stamp.read_text().strip() == digest.hexdigest():
        return binary
    go = shutil.which("go")
    if go is None:
        raise StartupError("`go` not found: run `make install` (golang-go, golang-google-cloud-dev)")
    config.bin_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ) | {
        # GOPATH mode against the distribution's Go sources: no module download.
        "GO111MODULE": "off",
        "GOPATH": "/usr/share/gocode",
        "GOCACHE": str(config.project_root / ".local" / "go-cache"),
        "GOFLAGS": "",
    }
    partial = config.bin_dir / f"pstest.{os.getpid()}.partial"
    build = subprocess.run(
        [go, "build", "-o", str(partial), "."],
        cwd=source_dir,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if build.returncode != 0:
        partial.unlink(missing_ok=True)
        raise StartupError(f"building pstest failed:\n{build.stdout}{build.stderr}")
    os.replace(partial, binary)
    stamp.write_text(digest.hexdigest() + "\n")
    return binary


def _gcloud_pubsub_emulator_installed() -> bool:
    gcloud = shutil.which("gcloud")
    if gcloud is None or shutil.which("java") is None:
        return False
    sdk_root = Path(gcloud).resolve().parent.parent
    return (sdk_root / "platform" / "pubsub-emulator").is_dir()


def pubsub_emulator_kind(choice: str) -> str:
    """`pstest` or `gcloud`: the choice made, or for `auto` the gcloud emulator where installed."""
    if choice == "auto":
        return "gcloud" if _gcloud_pubsub_emulator_installed() else "pstest"
    return choice


def start_pubsub(config: StackConfig, kind: str | None = None) -> tuple[str, ManagedProcess]:
    """A Pub/Sub emulator on ``config.pubsub_port``; returns its PUBSUB_EMULATOR_HOST value."""
    kind = pubsub_emulator_kind(kind or config.pubsub_emulator)
    host, port = config.host, config.pubsub_port
    env = base_environment(config)
    if kind == "pstest":
        argv: list[object] = [build_pstest(config), "-host", host, "-port", port]
    else:
        data_dir = config.state_dir / "pubsub"
        data_dir.mkdir(parents=True, exist_ok=True)
        project = config.settings.get("google_cloud_project", env.get("GOOGLE_CLOUD_PROJECT", "idrl-local"))
        argv = [
            "gcloud",
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port={host}:{port}",
            f"--data-dir={data_dir}",
            f"--project={project}",
        ]
        env["CLOUDSDK_CORE_DISABLE_PROMPTS"] = "1"
    process = ManagedProcess(
        f"pubsub-{kind}", argv, log_path=config.logs_dir / "pubsub.log", env=env, cwd=config.project_root
    ).start()
    try:
        process.wait_ready(tcp_probe(host, port), timeout=90)
    except BaseException:
        process.stop()
        raise
    return f"{host}:{port}", process


# --- Cloud Storage --------------------------------------------------------------------


def start_storage(config: StackConfig) -> tuple[str, ManagedProcess]:
    """The Cloud Storage emulator; returns its STORAGE_EMULATOR_HOST value.

    On disk under the state folder unless ``storage_in_memory``, so objects survive a
    restart exactly as long as the PostgreSQL rows that point at them.
    """
    host, port = config.host, config.storage_port
    env = base_environment(config)
    argv: list[object] = [
        config.python,
        "-m",
        "gcp_storage_emulator",
        "start",
        "--host",
        host,
        "--port",
        port,
    ]
    if config.storage_in_memory:
        argv.append("--in-memory")
    else:
        storage_dir = config.state_dir / "storage"
        storage_dir.mkdir(parents=True, exist_ok=True)
        env["STORAGE_BASE"] = str(storage_dir)
        env["STORAGE_DIR"] = "objects"
    process = ManagedProcess(
        "storage", argv, log_path=config.logs_dir / "storage.log", env=env, cwd=config.project_root
    ).start()
    endpoint = f"http://{host}:{port}"
    try:
        process.wait_ready(http_probe(f"{endpoint}/storage/v1/b?project=probe"), timeout=60)
    except BaseException:
        process.stop()
        raise
    return endpoint, process


# --- nginx ----------------------------------------------------------------------------


def render_gateway_config(config: StackConfig) -> Path:
    nginx_dir = config.state_dir / "nginx"
    nginx_dir.mkdir(parents=True, exist_ok=True)
    listen = [f"listen {config.host}:{config.gateway_port};"]
    if config.host == "127.0.0.1" and port_bindable("::1", config.gateway_port):
        # `localhost` resolves to ::1 first on most systems.
        listen.append(f"listen [::1]:{config.gateway_port};")
    # Workers run as the launching user: they write temp files under the state
    # folder, which may sit in a home no other user can enter.
    user_directive = "user root root;" if os.geteuid() == 0 else ""
    values = {
        "nginx_dir": str(nginx_dir),
        "user_directive": user_directive,
        "host": config.host,
        "auth_port": str(config.auth_port),
        "api_port": str(config.api_port),
        "listen_directives": "\n        ".join(listen),
    }
    text = (Path(__file__).parent / "nginx.conf.template").read_text()
    for name, value in values.items():
        text = text.replace("{{" + name + "}}", value)
    if "{{" in text:
        raise StartupError("nginx.conf.template has a field the launcher does not fill")
    path = nginx_dir / "nginx.conf"
    path.write_text(text)
    return path


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise StartupError("nginx not found: run `make install`")
    return found


# --- the whole stack ------------------------------------------------------------------


class LocalStack:
    """Everything `make up` runs. ``start()`` is all-or-nothing: a failure stops what
    was started before it; ``stop()`` stops every process it started."""

    def __init__(self, config: StackConfig, report: Report = _no_report, record_state: bool = False) -> None:
        self.config = config
        self.report = report
        self.record_state = record_state
        self.processes: list[tuple[int, ManagedProcess]] = []
        self.database_url = config.database_url
        self.pubsub_emulator_host = config.pubsub_emulator_host
        self.storage_emulator_host = config.storage_emulator_host
        self.pubsub_kind: str | None = None
        self._reported_dead: set[str] = set()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.config.host}:{self.config.gateway_port}"

    @property
    def settings_values(self) -> dict[str, str]:
        """Settings fields (lower-case names) the stack's services run with."""
        config = self.config
        values = {
            "environment": "local",
            "database_url": self.database_url or "",
            "token_signing_key_file": str(config.signing_key_path),
            "auth_jwks_url": f"http://{config.host}:{config.auth_port}/auth/.well-known/jwks.json",
            "allow_loopback_sources": "true",
        }
        return values | config.settings

    def service_environment(self) -> dict[str, str]:
        env = base_environment(self.config)
        env |= {name.upper(): value for name, value in self.settings_values.items()}
        env["PUBSUB_EMULATOR_HOST"] = self.pubsub_emulator_host or ""
        env["STORAGE_EMULATOR_HOST"] = self.storage_emulator_host or ""
        return env

    def _add(self, tier: int, process: ManagedProcess) -> ManagedProcess:
        self.processes.append((tier, process))
        self._write_state()
        return process

    def _write_state(self) -> None:
        if not self.record_state:
            return
        launcher = psutil.Process()
        state = {
            "launcher": {"pid": launcher.pid, "create_time": launcher.create_time()},
            "processes": [
                {"name": process.name, "pid": process.pid, "create_time": process.create_time}
                for _, process in self.processes
            ],
        }
        self.config.state_file.parent.mkdir(parents=True, exist_ok=True)
        self.config.state_file.write_text(json.dumps(state, indent=2) + "\n")

    def _planned_ports(self) -> list[tuple[str, int]]:
        config = self.config
        ports = [("gateway", config.gateway_port)]
        if not config.database_url:
            ports.append(("postgres", config.postgres_port))
        if not config.pubsub_emulator_host:
            ports.append(("pubsub", config.pubsub_port))
        if not config.storage_emulator_host:
            ports.append(("storage", config.storage_port))
        services = config.service_names()
        # The notifier's local runner pulls; it binds no port.
        ports += [(name, getattr(config, f"{name}_port")) for name in ("auth", "api") if name in services]
        return ports

    def _check_ports(self) -> None:
        planned = self._planned_ports()
        owners: dict[int, list[str]] = {}
        for name, port in planned:
            owners.setdefault(port, []).append(name)
        shared_ports = [f"{port} ({' and '.join(names)})" for port, names in owners.items() if len(names) > 1]
        if shared_ports:
            raise StartupError(f"one port for two components: {', '.join(shared_ports)}")
        taken = [f"{name} port {port}" for name, port in planned if not port_bindable(self.config.host, port)]
        if taken:
            raise StartupError(
                f"already in use: {', '.join(taken)}. Is a stack already running (`make down`)? "
                "Ports are set by GATEWAY_PORT, AUTH_PORT, API_PORT, POSTGRES_PORT, "
                "PUBSUB_PORT, STORAGE_PORT."
            )

    def _timed(self, what: str, step: Callable[[], object]) -> None:
        started = time.monotonic()
        self.report(f"  {what} ...")
        step()
        self.report(f"  {what}: done in {time.monotonic() - started:.1f} s")

    def start(self) -> LocalStack:
        config = self.config
        config.logs_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._check_ports()
            self._start_backing_services()
            env = self.service_environment()
            self._timed("migrating the database", lambda: run_migrations(config, self.database_url or ""))
            self._timed("signing key", lambda: self._ensure_signing_key(env))
            self._timed(
                "topics, subscriptions and buckets",
                lambda: run_step(
                    "provision", [config.python, "-m", "infra.local", "provision"], config=config, env=env
                ),
            )
            self._start_services(env)
            self._timed("gateway (nginx)", self._start_gateway)
            # Port-less services have no readiness probe; one that crashed on start-up
            # has had the time the others took to get ready to show it.
            dead = self.dead()
            if dead:
                raise StartupError(
                    "\n".join(
                        f"{process.name} exited during start-up ({process.exit_description}).\n"
                        f"{process.log_excerpt()}"
                        for process in dead
                    )
                )
        except BaseException:
            self.stop()
            raise
        return self

    def _start_backing_services(self) -> None:
        config = self.config
        if self.database_url is None:

            def postgres() -> None:
                self.database_url, process = start_postgres(config, self.report)
                self._add(TIER_BACKING, process)

            self._timed(f"PostgreSQL on {config.host}:{config.postgres_port}", postgres)
        if self.pubsub_emulator_host is None:
            self.pubsub_kind = pubsub_emulator_kind(config.pubsub_emulator)

            def pubsub() -> None:
                self.pubsub_emulator_host, process = start_pubsub(config, self.pubsub_kind)
                self._add(TIER_BACKING, process)

            self._timed(
                f"Pub/Sub emulator ({self.pubsub_kind}) on {config.host}:{config.pubsub_port}", pubsub
            )
        if self.storage_emulator_host is None:

            def storage() -> None:
                self.storage_emulator_host, process = start_storage(config)
                self._add(TIER_BACKING, process)

            self._timed(f"Storage emulator on {config.host}:{config.storage_port}", storage)

    def _ensure_signing_key(self, env: Mapping[str, str]) -> None:
        key_path = self.config.signing_key_path
        key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_step(
            "signing-key",
            [self.config.python, "-m", "shared.tokens", "generate", key_path],
            config=self.config,
            env=env,
        )

    def _gunicorn(self, name: str, port: int, env: Mapping[str, str]) -> ManagedProcess:
        config = self.config
        argv = [
            config.python,
            "-m",
            "gunicorn",
            "--bind",
            f"{config.host}:{port}",
            "--worker-class",
            "gthread",
            "--workers",
            config.gunicorn_workers,
            "--threads",
            config.gunicorn_threads,
            "--graceful-timeout",
            10,
            "--timeout",
            120,
            # Longer than the gateway keeps an idle upstream connection (60 s): otherwise
            # gunicorn (2 s by default) may close one just as nginx sends a POST on it,
            # and nginx, which never retries a POST, answers 502.
            "--keep-alive",
            75,
            "--access-logfile",
            "-",
            "--error-logfile",
            "-",
            f"services.{name}:create_app()",
        ]
        return ManagedProcess(
            name,
            argv,
            log_path=config.logs_dir / f"{name}.log",
            env=env,
            cwd=config.project_root,
            stop_timeout=15,
        )

    def _start_services(self, env: Mapping[str, str]) -> None:
        config = self.config
        names = config.service_names()
        if not names:
            self.report("  no service package exists yet (services/<name>/__init__.py): none started")
        http_services = []
        for name in names:
            if name in ("auth", "api"):
                port = getattr(config, f"{name}_port")
                process = self._add(TIER_SERVICES, self._gunicorn(name, port, env).start())
                http_services.append((process, f"http://{config.host}:{port}/healthz"))
            elif name == "transcoder":
                for index in range(1, config.transcoder_workers + 1):
                    self._add(
                        TIER_SERVICES,
                        ManagedProcess(
                            f"transcoder-{index}",
                            [config.python, "-m", "services.transcoder"],
                            log_path=config.logs_dir / f"transcoder-{index}.log",
                            env=env,
                            # The worker alone gets SIGTERM, so it drains: its ffmpeg runs
                            # (same process group) finish or are handed back by the worker,
                            # within its drain grace (DRAIN_GRACE_SECONDS, 60 s by default).
                            cwd=config.project_root,
                            signal_group=False,
                            stop_timeout=75,
                        ).start(),
                    )
            elif name == "notifier":
                self._add(
                    TIER_SERVICES,
                    ManagedProcess(
                        "notifier",
                        [config.python, "-m", "services.notifier"],
                        log_path=config.logs_dir / "notifier.log",
                        env=env,
                        cwd=config.project_root,
                        stop_timeout=15,
                    ).start(),
                )
        for process, url in http_services:
            self._timed(
                f"{process.name} on {url.rsplit('/', 1)[0]}",
                partial(process.wait_ready, http_probe(url), timeout=60),
            )

    def _start_gateway(self) -> None:
        config = self.config
        conf = render_gateway_config(config)
        process = self._add(
            TIER_GATEWAY,
            ManagedProcess(
                "gateway",
                [nginx_binary(), "-p", conf.parent, "-e", "stderr", "-c", conf],
                log_path=config.logs_dir / "gateway.log",
                cwd=config.project_root,
            ).start(),
        )
        process.wait_ready(tcp_probe(config.host, config.gateway_port), timeout=30)

    def newly_dead(self) -> list[ManagedProcess]:
        """Processes that exited on their own since the last call."""
        dead = [
            process
            for _, process in self.processes
            if process.died_unexpectedly and process.name not in self._reported_dead
        ]
        self._reported_dead.update(process.name for process in dead)
        return dead

    def dead(self) -> list[ManagedProcess]:
        return [process for _, process in self.processes if process.died_unexpectedly]

    def stop(self) -> None:
        for tier in (TIER_GATEWAY, TIER_SERVICES, TIER_BACKING):
            stop_all([process for process_tier, process in self.processes if process_tier == tier])
        if self.record_state:
            self.config.state_file.unlink(missing_ok=True)
