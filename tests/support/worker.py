"""What the worker tests share: task rows (read back with ``tests/support/db.py``), the
notifier applying the worker's events to the database as it does in the stack, and
workers run in a thread or as processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import requests
from google.auth.credentials import AnonymousCredentials
from google.cloud import pubsub_v1, storage
from sqlalchemy import func, insert, update
from sqlalchemy.engine import Engine

from services.notifier.main import apply_event, let_out
from services.transcoder.worker import Worker
from shared import layout
from shared.config import Settings
from shared.events import ClipOutput, ClipSpec, PartSubmitted, TaskStatusChanged, TaskSubmitted, decode
from shared.lifecycle import TaskStatus
from shared.pubsub import Publisher, subscription_path
from shared.storage import gs_uri, storage_client
from shared.tables import clips, tasks
from tests.support.db import insert_user, task_row

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def wait_status(engine: Engine, task_id: uuid.UUID, *statuses: str, timeout: float = 120) -> dict:
    """The task's row (with its clips) once its status is one of ``statuses``."""
    wanted = {str(status) for status in statuses}
    return wait_for(
        lambda: (row := task_row(engine, task_id, with_clips=True))["status"] in wanted and row,
        timeout,
        f"task {task_id} to become {'/'.join(sorted(wanted))}",
    )


# --- the database, as the api leaves it -----------------------------------------------------


def insert_task(engine: Engine, source: str, spec: ClipSpec = ClipSpec()) -> TaskSubmitted:
    """A queued task row (and its owner), dispatched as the api dispatches a task whose
    owner has room, and the TaskSubmitted the api would publish."""
    owner = insert_user(engine)
    task = TaskSubmitted(task_id=uuid.uuid4(), owner_id=owner, source=source, spec=spec)
    with engine.begin() as conn:
        conn.execute(
            insert(tasks).values(
                id=task.task_id,
                owner_id=owner,
                source_kind="upload" if source.startswith("gs://") else "url",
                source=source,
                spec=spec.model_dump(mode="json"),
                dispatched_at=func.now(),
            )
        )
    return task


def upload_source(settings, path: Path) -> str:
    name = f"uploads/{uuid.uuid4()}/{path.name}"
    storage_client().bucket(settings.uploads_bucket).blob(name).upload_from_filename(str(path))
    return gs_uri(settings.uploads_bucket, name)


def clip_objects(settings, task_id: uuid.UUID) -> list[str]:
    return sorted(
        blob.name for blob in storage_client().list_blobs(settings.clips_bucket, prefix=f"tasks/{task_id}/")
    )


def submit(settings, task: TaskSubmitted) -> None:
    Publisher(settings).publish(settings.topic_video_tasks, task).result(30)


def mark_interrupted(engine: Engine, task_id: uuid.UUID, attempts: int) -> None:
    """What the notifier records of ``attempts`` runs that each announced themselves
    (``processing``) and then died."""
    with engine.begin() as conn:
        conn.execute(update(tasks).where(tasks.c.id == task_id).values(status="processing", attempt=attempts))


def record_clip(settings, engine: Engine, task_id: uuid.UUID, index: int, content: bytes) -> ClipOutput:
    """A clip of part ``index`` an earlier attempt stored and the notifier recorded
    (``content`` stands for all three of its files)."""
    bucket = storage_client().bucket(settings.clips_bucket)
    names = {
        "uri": layout.clip_object(task_id, index),
        "poster_uri": layout.poster_object(task_id, index),
        "preview_uri": layout.preview_object(task_id, index),
    }
    for name in names.values():
        bucket.blob(name).upload_from_string(content)
    clip = ClipOutput(
        index=index,
        duration_seconds=4.0,
        size_bytes=len(content),
        **{field: gs_uri(settings.clips_bucket, name) for field, name in names.items()},
    )
    with engine.begin() as conn:
        conn.execute(insert(clips).values(task_id=task_id, **clip.model_dump()))
    return clip


def store_partial_outputs(settings, task_id: uuid.UUID) -> list[str]:
    """The clip and poster a run uploaded before it died; returns their names."""
    bucket = storage_client().bucket(settings.clips_bucket)
    names = [f"tasks/{task_id}/part-01.jpg", f"tasks/{task_id}/part-01.mp4"]
    for name in names:
        bucket.blob(name).upload_from_string(b"a partial output")
    return names


# --- storage that fails ---------------------------------------------------------------------


def uploads(method: str, path: str, body: bytes = b"") -> bool:
    return method == "POST" and path.startswith("/upload/")


def upload_of(name: str) -> Callable[[str, str, bytes], bool]:
    """The start of an upload of an object whose name ends with ``name`` (the name is in
    the upload's metadata, in its body)."""
    return lambda method, path, body: uploads(method, path) and f'{name}"'.encode() in body


def listings_of(bucket: str) -> Callable[[str, str], bool]:
    """Requests that list the objects of ``bucket`` (deleting a task's outputs starts so)."""
    return lambda method, path, body: method == "GET" and path.startswith(f"/storage/v1/b/{bucket}/o?")


class FlakyStorageProxy:
    """Forwards to the storage emulator, answering ``status`` (503 unless told otherwise)
    to the first ``failures`` requests that ``refuse(method, path, body)`` picks
    (uploads, unless told otherwise)."""

    def __init__(
        self,
        upstream: str,
        failures: int,
        refuse: Callable[[str, str, bytes], bool] = uploads,
        status: int = 503,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.failures_left = failures
        self.failed = 0
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if refuse(self.command, self.path, body) and proxy._take_failure():
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                answer = requests.request(
                    self.command, proxy.upstream + self.path, data=body, headers=headers, timeout=30
                )
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _take_failure(self) -> bool:
        with self._lock:
            if self.failures_left > 0:
                self.failures_left -= 1
                self.failed += 1
                return True
            return False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def client(self) -> storage.Client:
        return storage.Client(
            project="idrl-local",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": self.url},
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> FlakyStorageProxy:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# --- the notifier ---------------------------------------------------------------------------


@dataclass
class Notifier:
    """Applies every task-events message to the database with the notifier's own code,
    and lets out what that made room for (a part handed out, a part made, a task ended),
    as the notifier does; keeps each status change it saw, for the tests to count
    outcomes."""

    settings: Settings
    engine: Engine
    events: list[TaskStatusChanged] = field(default_factory=list)
    parts: list[PartSubmitted] = field(default_factory=list)
    publisher: Publisher | None = None

    def for_task(self, task_id: uuid.UUID) -> list[TaskStatusChanged]:
        # Redelivered copies carry the same event id: count each event once.
        unique = {e.event_id: e for e in list(self.events) if e.task_id == task_id}
        return sorted(unique.values(), key=lambda e: e.occurred_at)

    def statuses(self, task_id: uuid.UUID) -> list[tuple[str, int, int]]:
        return [(str(e.status), e.attempt, e.progress) for e in self.for_task(task_id)]

    def starts(self, task_id: uuid.UUID) -> list[int]:
        """The attempts announced: each attempt's first ``processing`` event (progress 0,
        before its count of parts and its clips)."""
        return [
            e.attempt
            for e in self.for_task(task_id)
            if e.status is TaskStatus.PROCESSING
            and e.progress == 0
            and e.clips_total is None
            and not e.outputs
            and e.part is None
        ]

    def part_starts(self, task_id: uuid.UUID) -> list[tuple[int, int, str | None]]:
        """Each part attempt announced, as (part, attempt, worker id), in order."""
        return [
            (e.part, e.attempt, e.worker_id)
            for e in self.for_task(task_id)
            if e.part is not None and e.status is TaskStatus.PROCESSING and not e.outputs and e.progress == 0
        ]

    def outcomes(self, task_id: uuid.UUID) -> list[TaskStatusChanged]:
        return [e for e in self.for_task(task_id) if e.status in (TaskStatus.PROCESSED, TaskStatus.FAILED)]

    def handed_out(self, task_id: uuid.UUID) -> list[tuple[int, bool]]:
        """Each part its planning worker handed out, as (part, in place), once per event."""
        unique = {e.event_id: e for e in list(self.parts) if e.task_id == task_id}
        return sorted((e.index, e.in_place) for e in unique.values())

    def _callback(self, message) -> None:
        event = decode(message.data, dict(message.attributes))
        if isinstance(event, TaskStatusChanged):
            self.events.append(event)
        elif isinstance(event, PartSubmitted):
            self.parts.append(event)
        result = apply_event(
            self.engine, event, clips_bucket=self.settings.clips_bucket, settings=self.settings
        )
        if self.publisher is not None:
            let_out(self.engine, self.publisher, self.settings, result)
        message.ack()

    @contextmanager
    def running(self):
        path = subscription_path(self.settings, self.settings.subscription_notifier)
        self.publisher = self.publisher or Publisher(self.settings)
        with pubsub_v1.SubscriberClient() as subscriber:
            future = subscriber.subscribe(path, self._callback, await_callbacks_on_shutdown=True)
            try:
                yield self
            finally:
                future.cancel()
                future.result()


# --- workers ------------------------------------------------------------------------------


@contextmanager
def worker_thread(settings: Settings, engine: Engine, **kwargs):
    """A worker pulling in a thread of this process; drained and joined on exit."""
    worker = Worker(
        settings,
        engine=engine,
        storage_client=kwargs.pop("storage_client", storage_client()),
        publisher=Publisher(settings),
        **kwargs,
    )
    shutdown = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(shutdown)
        except BaseException as exc:  # noqa: BLE001 - surfaced to the test below
            failure.append(exc)

    thread = threading.Thread(target=run, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        shutdown.set()
        thread.join(settings.drain_grace_seconds + 60)
    assert not thread.is_alive(), "the worker did not stop"
    if failure:
        raise failure[0]


def environment_for(settings: Settings) -> dict[str, str]:
    """The environment a worker process reads ``settings`` from."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name.upper(), None)
        else:
            env[name.upper()] = json.dumps(value) if isinstance(value, bool) else str(value)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ffmpeg_under(pid: int, *, encodes_only: bool = False) -> list[psutil.Process]:
    """The ffmpeg processes below ``pid``; with ``encodes_only``, not the stream copies
    that cut a source into segments."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    found = []
    for child in children:
        try:
            if child.name() == "ffmpeg" and not (encodes_only and "copy" in child.cmdline()):
                found.append(child)
        except psutil.NoSuchProcess:
            continue  # ended between the listing and the look (an ffprobe run, say)
    return found


def gone(process: psutil.Process) -> bool:
    """Dead, or a zombie nobody reaps (this machine's init may not): no longer running."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@dataclass
class WorkerProcess:
    process: subprocess.Popen
    log_path: Path

    def ffmpeg_children(self) -> list[psutil.Process]:
        return ffmpeg_under(self.process.pid)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)


@contextmanager
def worker_process(settings: Settings, log_path: Path):
    """``python -m services.transcoder`` with ``settings``; killed on exit if still running."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.transcoder"],
            cwd=PROJECT_ROOT,
            env=environment_for(settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = WorkerProcess(process, log_path)
    try:
        yield worker
    finally:
        worker.stop()
