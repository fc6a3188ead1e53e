"""Notifier fixtures: an engine on the test database, a user and tasks to apply events to,
and the environment a notifier process needs to reach the same database and emulators."""

from __future__ import annotations

import base64
import contextlib
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from infra.local import ManagedProcess, free_port
from services.notifier.apply import Result
from services.notifier.main import handle_message
from shared import db
from shared.config import Settings
from shared.events import TaskStatusChanged, encode
from shared.tables import tasks
from tests.support.db import insert_user

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def engine(settings: Settings):
    engine = db.create_engine(settings)
    yield engine
    engine.dispose()


@pytest.fixture
def owner_id(engine: Engine) -> uuid.UUID:
    return insert_user(engine)


@pytest.fixture
def make_task(engine: Engine, owner_id: uuid.UUID) -> Callable[..., uuid.UUID]:
    """Insert a task row as the api would; columns other than the id are overridable."""

    def make(**columns) -> uuid.UUID:
        row = {
            "id": uuid.uuid4(),
            "owner_id": owner_id,
            "status": "queued",
            "source_kind": "url",
            "source": "https://videos.league.example/run.mp4",
            "spec": {},
            "progress": 0,
            "attempt": 0,
            "deleted_at": None,
        }
        row.update(columns)
        with engine.begin() as conn:
            conn.execute(insert(tasks).values(row))
        return row["id"]

    return make


@pytest.fixture
def deliver(engine: Engine, settings: Settings) -> Callable[..., Result | None]:
    """Hand an event to the function's message handler, as Eventarc's ``message`` object
    (the same path ``on_task_event`` takes, on the test's engine)."""

    def deliver_event(event: TaskStatusChanged | dict, *, on: Engine | None = None):
        message = event if isinstance(event, dict) else pubsub_message(event)
        return handle_message(on or engine, message, clips_bucket=settings.clips_bucket)

    return deliver_event


def pubsub_message(event: TaskStatusChanged, message_id: str = "1") -> dict:
    data, attributes = encode(event)
    return {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": message_id}


@pytest.fixture
def notifier_env(settings: Settings) -> Callable[..., dict[str, str]]:
    """The environment of a notifier process that talks to the test's database, topic,
    subscription and bucket (and the emulators the test session runs)."""

    def environment(**overrides: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "PYTHONPATH": str(PROJECT_ROOT),
                "PYTHONUNBUFFERED": "1",
                "ENVIRONMENT": "test",
                "DATABASE_URL": settings.database_url or "",
                "GOOGLE_CLOUD_PROJECT": settings.google_cloud_project,
                "TOPIC_TASK_EVENTS": settings.topic_task_events,
                "SUBSCRIPTION_NOTIFIER": settings.subscription_notifier,
                "CLIPS_BUCKET": settings.clips_bucket,
                "LOG_LEVEL": "INFO",
            }
        )
        env.update(overrides)
        return env

    return environment


@pytest.fixture
def start_process(tmp_path: Path) -> Iterator[Callable[..., ManagedProcess]]:
    """Start a child process (own process group, output in ``tmp_path``); every one
    still running is stopped when the test ends."""
    started: list[ManagedProcess] = []

    def start(name: str, argv: Sequence[object], env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(
            name, argv, log_path=tmp_path / f"{name}.log", env=env, cwd=PROJECT_ROOT, stop_timeout=20
        )
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


class DatabaseLink:
    """A TCP relay between notifier processes and the test's PostgreSQL that the test can
    cut (listener closed, open connections reset) and restore, as a network or Cloud SQL
    outage would."""

    def __init__(self, database_url: str) -> None:
        url = sqlalchemy.make_url(database_url)
        self.target = (url.host or "127.0.0.1", url.port or 5432)
        self.port = free_port()
        self.url = url.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._accepting: threading.Thread | None = None

    @property
    def is_up(self) -> bool:
        return self._accepting is not None

    def up(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self._stop.clear()
        self._accepting = self._spawn(self._accept, listener)

    def down(self) -> None:
        self._stop.set()
        if self._accepting is not None:
            self._accepting.join()
            self._accepting = None
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):  # already reset by the other side
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join()
        self._threads = []
        for sock in sockets:
            sock.close()

    def _spawn(self, target, *args) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _accept(self, listener: socket.socket) -> None:
        with listener:
            while not self._stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                client.settimeout(None)
                try:
                    upstream = socket.create_connection(self.target, timeout=5)
                except OSError:
                    client.close()
                    continue
                upstream.settimeout(None)
                with self._lock:
                    self._sockets += [client, upstream]
                self._spawn(self._pump, client, upstream)
                self._spawn(self._pump, upstream, client)

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass  # the link was cut or a side went away: end this direction
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def database_link(settings: Settings) -> Iterator[DatabaseLink]:
    """A cuttable link to the test's database (down until the test raises it)."""
    link = DatabaseLink(settings.database_url or "")
    yield link
    link.down()
