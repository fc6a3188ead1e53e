"""What a local stack is made of: its configuration (ports, state folder, services) and
the one-shot steps every part runs with (the child environment, logged commands,
migrations).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from infra.local.process import StartupError, free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("auth", "api", "transcoder", "notifier", "dispatcher")
PUBSUB_EMULATORS = ("auto", "pstest", "gcloud")
SIGNING_KEY_NAME = "token-signing-key.pem"
# Every port a stack listens on, as StackConfig names them.
PORT_FIELDS = ("gateway_port", "auth_port", "api_port", "postgres_port", "pubsub_port", "storage_port")
# Local throwaway cluster only: trust authentication on loopback, not a secret.
LOCAL_DB_ROLE = "idrl"

Report = Callable[[str], None]


def no_report(message: str) -> None:
    pass


def free_ports() -> dict[str, int]:
    """A port free right now for each listener of a stack: StackConfig fields for a
    stack that must not disturb another one (a running `make up`, a parallel test)."""
    return {name: free_port() for name in PORT_FIELDS}


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
