"""The local stack: PostgreSQL, the Pub/Sub and Cloud Storage emulators, the services
and the nginx gateway, each a local process started by one code path.

`make up` and the test fixtures both go through LocalStack, so what the tests start is
what a developer runs. Each backing part has its module (postgres, emulators, gateway);
this one starts the services and puts the parts together.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Self

import psutil

from infra.local.emulators import pubsub_emulator_kind, start_pubsub, start_storage
from infra.local.gateway import start_gateway
from infra.local.postgres import start_postgres
from infra.local.process import ManagedProcess, StartupError, http_probe, port_bindable, stop_all
from infra.local.stack_config import (
    Report,
    StackConfig,
    base_environment,
    no_report,
    run_migrations,
    run_step,
)

# Stop order: the gateway first, then the services, then what they depend on.
TIER_BACKING, TIER_SERVICES, TIER_GATEWAY = 0, 1, 2


class LocalStack:
    """Everything `make up` runs. ``start()`` is all-or-nothing: a failure stops what
    was started before it; ``stop()`` stops every process it started."""

    def __init__(self, config: StackConfig, report: Report = no_report, record_state: bool = False) -> None:
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
            "allow_loopback_webhooks": "true",
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
            "--config",
            f"services/{name}/gunicorn_config.py",
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
            elif name in ("notifier", "dispatcher"):
                self._add(
                    TIER_SERVICES,
                    ManagedProcess(
                        name,
                        [config.python, "-m", f"services.{name}"],
                        log_path=config.logs_dir / f"{name}.log",
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
        self._add(TIER_GATEWAY, start_gateway(self.config))

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
