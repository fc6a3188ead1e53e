"""What the fault drills share: a stack started to be broken, ways to break it, and the
final-state check every drill ends with.

A fault stack has everything of its own that a drill may break — its PostgreSQL
cluster, its Pub/Sub emulator (pstest), its scratch folder — and reaches the run's
Cloud Storage emulator through a :class:`StorageFaultProxy`. The other tests of the
run never see its faults.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import requests
import sqlalchemy
from sqlalchemy import func, select
from sqlalchemy.pool import NullPool

from infra.local import LocalStack, ManagedProcess, StackConfig, free_ports
from infra.local.process import group_members, http_probe, wait_until
from infra.local.stack import run_step
from shared.config import Settings
from shared.storage import delete_buckets, parse_gs_uri, storage_client
from shared.tables import clips, outbox, task_history, tasks
from tests.support.names import isolated_names
from tests.support.stack import E2EStack, assert_alive
from tests.support.storage_proxy import StorageFaultProxy

# Generous: a drill waits for the platform, it does not time it.
SETTLE_TIMEOUT = 300.0


# systemd starts the transcoder's container again this long after it exits
# (infra/terraform/modules/container_mig: Restart=always, RestartSec=5).
RESTART_DELAY_SECONDS = 5.0


def is_consumer(process: ManagedProcess) -> bool:
    return process.name.startswith("transcoder-") or process.name == "notifier"


class Supervisor:
    """Starts again a worker or the notifier that exited on its own, RESTART_DELAY_SECONDS
    after the exit was seen, as systemd does on Google Cloud for the transcoder (where
    the notifier is a Cloud Function, started per event). ``restarts`` tells which, and
    how each had ended: a drill reports them, since each is a crash the fault caused."""

    def __init__(self, stack: FaultStack) -> None:
        self._stack = stack
        self._seen: dict[str, float] = {}
        self.restarts: list[str] = []

    def __call__(self) -> None:
        now = time.monotonic()
        for process in self._stack.stack.dead():
            if not is_consumer(process):
                continue
            first_seen = self._seen.setdefault(process.name, now)
            if now - first_seen >= RESTART_DELAY_SECONDS:
                self.restarts.append(f"{process.name} ({process.exit_description})")
                del self._seen[process.name]
                self._stack.start_again(process)

    @property
    def waiting(self) -> set[str]:
        """Consumers that exited and are due to be started again."""
        return set(self._seen)

    def describe(self) -> str:
        if not self.restarts:
            return "no process exited"
        return "exited and started again: " + ", ".join(self.restarts)


@dataclass
class FaultStack(E2EStack):
    """A running stack made to be broken: its processes, its database, its buckets."""

    storage_proxy: StorageFaultProxy
    scratch_dir: Path
    supervisor: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.supervisor = Supervisor(self)

    @property
    def config(self) -> StackConfig:
        return self.stack.config

    def http_service_url(self, name: str) -> str:
        return f"http://{self.config.host}:{getattr(self.config, f'{name}_port')}"

    def kill9(self, process: ManagedProcess, *, whole_group: bool = True) -> None:
        """SIGKILL the process — with its whole group (a gunicorn master and its
        workers) unless ``whole_group`` is false — and reap it: a crash, not a stop."""
        assert process.popen is not None and process.running, f"{process.name} is not running"
        pid = process.popen.pid
        process.stopping = True  # the drill's doing: not a death to report; start_again() clears it
        if whole_group:
            os.killpg(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGKILL)
        process.popen.wait(timeout=30)
        if whole_group:
            assert wait_until(lambda: not group_members(pid), timeout=30), (
                f"{process.name}'s group outlived SIGKILL"
            )

    def start_again(self, process: ManagedProcess, **environment: str) -> None:
        """Start a stopped or killed component with the same command (and ``environment``
        on top of its own), as a supervisor would; wait until it serves if it has a port."""
        assert not process.running, f"{process.name} is still running"
        if environment:
            assert process.env is not None
            process.env.update(environment)
        process.start()
        if process.name in ("api", "auth"):
            process.wait_ready(http_probe(f"{self.http_service_url(process.name)}/healthz"), timeout=90)

    def provision(self) -> None:
        """Create the topics, subscriptions and buckets that are missing, with the
        stack's own command (``python -m infra.local provision``)."""
        run_step(
            "provision",
            [self.config.python, "-m", "infra.local", "provision"],
            config=self.config,
            env=self.stack.service_environment(),
            timeout=120,
        )

    def wait_healthy(self, timeout: float = 120.0) -> None:
        """Every component running and the api ready (database and storage) through the gateway."""
        deadline = time.monotonic() + timeout
        while True:
            self.assert_running()
            try:
                if requests.get(f"{self.base_url}/readyz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, f"the stack was not ready again within {timeout:.0f} s"
            time.sleep(0.2)


@contextmanager
def fault_stack(
    state_dir: Path,
    *,
    storage_emulator_host: str,
    transcoder_workers: int = 2,
    settings: dict[str, str] | None = None,
) -> Iterator[FaultStack]:
    """The whole stack with its own PostgreSQL and Pub/Sub emulator, storage behind a
    switchable proxy, and a scratch folder of its own; stopped and its buckets deleted
    afterwards. AssertionError at the end if a process died on its own meanwhile."""
    scratch = state_dir / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    # The postgres user must reach the cluster's folder; pytest's own are private.
    with (
        StorageFaultProxy(storage_emulator_host) as proxy,
        tempfile.TemporaryDirectory(prefix="idrl-faults-pg-") as pg_parent,
    ):
        os.chmod(pg_parent, 0o711)
        config = StackConfig(
            state_dir=state_dir,
            postgres_dir=Path(pg_parent) / "pg",
            pubsub_emulator="pstest",
            storage_emulator_host=proxy.url,
            transcoder_workers=transcoder_workers,
            settings=isolated_names("e2e") | {"scratch_dir": str(scratch)} | (settings or {}),
            **free_ports(),
        )
        stack = LocalStack(config)
        engine: sqlalchemy.Engine | None = None
        try:
            stack.start()
            # No pool: drills stop PostgreSQL under this engine.
            engine = sqlalchemy.create_engine(stack.database_url, poolclass=NullPool)
            yield FaultStack(stack, Settings(**stack.settings_values), engine, proxy, scratch)
            assert_alive(stack)
        finally:
            stack.stop()
            if engine is not None:
                engine.dispose()
            # The topics and subscriptions went with the stack's own emulator.
            delete_buckets(Settings(**stack.settings_values))


# --- the scratch disk ------------------------------------------------------------------------


class TmpfsRefused(RuntimeError):
    """This machine does not let the test mount a tmpfs (no CAP_SYS_ADMIN)."""


@contextmanager
def tmpfs(mount_point: Path, size: str = "20m") -> Iterator[Path]:
    """A small tmpfs mounted over ``mount_point`` while the block runs."""
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=1777", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if mounted.returncode != 0:
        raise TmpfsRefused(f"mount -t tmpfs failed: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        if subprocess.run(["umount", str(mount_point)], check=False, timeout=30).returncode != 0:
            # Something still holds a file there: detach it now, freed when released.
            subprocess.run(["umount", "--lazy", str(mount_point)], check=True, timeout=30)


def fill_disk(folder: Path, leave_bytes: int) -> Path:
    """Take all but ``leave_bytes`` of the free space of ``folder``'s file system."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    filler = folder / "filler"
    with filler.open("wb") as out:
        os.posix_fallocate(out.fileno(), 0, max(0, free - leave_bytes))
    return filler


# --- processes ------------------------------------------------------------------------------


def ffmpeg_of(worker: ManagedProcess, *, making: str | None = None) -> psutil.Process | None:
    """The worker's running ffmpeg (the one writing ``making`` when given), if any."""
    try:
        children = psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:
            if child.name() == "ffmpeg" and (making is None or any(making in arg for arg in child.cmdline())):
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def log_messages(process: ManagedProcess, task_id: str) -> list[str]:
    """The messages of ``process``'s JSON log lines about ``task_id``, every run included."""
    messages = []
    for line in process.log_path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a launcher banner or a traceback line
        if isinstance(record, dict) and record.get("task_id") == task_id:
            messages.append(str(record.get("message", "")))
    return messages


def wait_for(
    condition: Callable[[], object],
    *,
    timeout: float,
    what: str,
    while_waiting: Callable[[], None] | None = None,
    interval: float = 0.1,
):
    """Poll ``condition`` until it returns something true; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not after {timeout:.0f} s: {what}"
        if while_waiting is not None:
            while_waiting()
        time.sleep(interval)


# --- the final state ----------------------------------------------------------------------------


def active_tasks(engine: sqlalchemy.Engine) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        return [
            (str(task_id), status)
            for task_id, status in conn.execute(
                select(tasks.c.id, tasks.c.status)
                .where(tasks.c.status.in_(("queued", "processing")))
                .order_by(tasks.c.created_at)
            )
        ]


def wait_until_settled(stack: FaultStack, timeout: float = SETTLE_TIMEOUT) -> float:
    """Wait until no task of the stack is queued or processing; returns the moment
    (``time.monotonic()``) it was first seen so. Fails listing the stuck tasks, or at
    once if a component died that the supervisor does not start again."""
    deadline = time.monotonic() + timeout
    while True:
        stack.supervisor()
        dead = [process for process in stack.stack.dead() if process.name not in stack.supervisor.waiting]
        assert not dead, "stack processes died:\n" + "\n".join(
            f"{process.name} ({process.exit_description})\n{process.log_excerpt()}" for process in dead
        )
        try:
            stuck = active_tasks(stack.engine)
        except sqlalchemy.exc.DBAPIError:
            stuck = [("?", "database unreachable")]
        if not stuck and not stack.supervisor.waiting:
            return time.monotonic()
        assert time.monotonic() < deadline, f"tasks still active {timeout:.0f} s after the fault: {stuck}"
        time.sleep(0.2)


@dataclass(frozen=True)
class FinalState:
    """What the database and the clips bucket hold once every task has settled."""

    statuses: dict[str, str]
    failure_reasons: dict[str, str | None]

    def of(self, task_ids: Iterable[str]) -> list[str]:
        return [self.statuses[task_id] for task_id in task_ids]


def assert_final_state(stack: FaultStack, accepted: Iterable[str]) -> FinalState:
    """The end of every drill: each task accepted is in the database; every task is
    ``processed`` with exactly one ``processed`` line in its history and its recorded
    clips in the bucket, or ``failed`` with a reason, or ``canceled``, with no
    ``processed`` line; and every object under ``tasks/`` in the clips bucket is a
    recorded clip, poster or preview of a processed task, or of a failed one (the parts
    a task made before it failed stay its clips): nothing orphaned."""
    with stack.engine.connect() as conn:
        rows = {
            str(row.id): row
            for row in conn.execute(
                select(tasks.c.id, tasks.c.status, tasks.c.failure_reason, tasks.c.deleted_at)
            )
        }
        processed_lines = func.count().filter(task_history.c.status == "processed")
        lines = {
            str(task_id): count
            for task_id, count in conn.execute(
                select(task_history.c.task_id, processed_lines).group_by(task_history.c.task_id)
            )
        }
        canceled_lines = {
            str(task_id)
            for (task_id,) in conn.execute(
                select(task_history.c.task_id).distinct().where(task_history.c.status == "canceled")
            )
        }
        recorded: dict[str, set[str]] = {}
        for task_id, uri, poster_uri, preview_uri in conn.execute(
            select(clips.c.task_id, clips.c.uri, clips.c.poster_uri, clips.c.preview_uri)
        ):
            recorded.setdefault(str(task_id), set()).update(u for u in (uri, poster_uri, preview_uri) if u)

    missing = [task_id for task_id in accepted if task_id not in rows]
    assert not missing, f"tasks answered 202 but absent from the database: {missing}"
    problems = []
    for task_id, row in rows.items():
        processed = lines.get(task_id, 0)
        if row.status == "processed":
            if processed != 1:
                problems.append(f"{task_id} processed with {processed} processed lines in its history")
            if not recorded.get(task_id):
                problems.append(f"{task_id} processed without clips")
        elif row.status == "failed":
            if not (row.failure_reason or "").strip():
                problems.append(f"{task_id} failed without a reason")
            if processed:
                problems.append(f"{task_id} failed after {processed} processed lines")
        elif row.status == "canceled":
            if task_id not in canceled_lines and row.deleted_at is None:
                problems.append(f"{task_id} canceled with no cancellation recorded")
            if processed:
                problems.append(f"{task_id} canceled after {processed} processed lines")
        else:
            problems.append(f"{task_id} still {row.status}")
    assert not problems, "final state broken:\n" + "\n".join(problems)

    bucket = stack.settings.clips_bucket
    live = {
        parse_gs_uri(uri)[1]
        for task_id, uris in recorded.items()
        if rows[task_id].status in ("processed", "failed") and rows[task_id].deleted_at is None
        for uri in uris
    }
    stored = {blob.name for blob in storage_client().list_blobs(bucket)}
    orphans = sorted(stored - live)
    assert not orphans, f"objects in gs://{bucket} that no processed or failed task records: {orphans}"
    lost = sorted(live - stored)
    assert not lost, f"clips recorded but absent from gs://{bucket}: {lost}"
    return FinalState(
        statuses={task_id: row.status for task_id, row in rows.items()},
        failure_reasons={task_id: row.failure_reason for task_id, row in rows.items()},
    )


def task_ids_of(engine: sqlalchemy.Engine) -> set[str]:
    with engine.connect() as conn:
        return {str(task_id) for (task_id,) in conn.execute(select(tasks.c.id))}


def outbox_rows(engine: sqlalchemy.Engine, task_id: str) -> list[dict]:
    """The task's TaskSubmitted rows in the outbox, oldest first."""
    with engine.connect() as conn:
        return [
            dict(row)
            for row in conn.execute(
                select(outbox.c.id, outbox.c.created_at, outbox.c.published_at)
                .where(
                    outbox.c.attributes["task_id"].astext == task_id,
                    outbox.c.attributes["event_type"].astext == "TaskSubmitted",
                )
                .order_by(outbox.c.id)
            ).mappings()
        ]
