"""Stacks the end-to-end tests start themselves, and what the tests read behind the
gateway to check the properties a client cannot see: the events on `task-events`, the
objects in the clips bucket (the rows the notifier recorded are read with
``tests/support/db.py``).

A stack started here has its own PostgreSQL cluster (the launcher's, in a folder of its
own), so a test may stop that database without touching any other test's; it shares
the run's Pub/Sub and Storage emulators under topic, subscription and bucket names of
its own.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy
from google.cloud import pubsub_v1
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from infra.local import LocalStack, ManagedProcess, StackConfig, free_ports
from shared import db
from shared.config import Settings
from shared.events import TaskStatusChanged, decode
from shared.pubsub import delete_topology, subscription_path, topic_path
from shared.storage import delete_buckets, storage_client
from tests.support.names import SHARED_STACK_LIMITS, isolated_names


@dataclass
class E2EStack:
    """A running local stack, with a database engine for reading what the notifier wrote."""

    stack: LocalStack
    settings: Settings
    engine: Engine

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def assert_running(self) -> None:
        assert_alive(self.stack)

    def process(self, name: str) -> ManagedProcess:
        return next(process for _, process in self.stack.processes if process.name == name)

    def workers(self) -> list[ManagedProcess]:
        return [process for _, process in self.stack.processes if process.name.startswith("transcoder-")]

    def worker_for(self, worker_id: str) -> ManagedProcess:
        """The worker process that reports itself as ``worker_id``: the launcher's
        WORKER_ID (``local-<process name>``) or the worker's default ``<host>:<pid>``."""
        matches = [
            worker
            for worker in self.workers()
            if worker_id in (f"local-{worker.name}", f"{socket.gethostname()}:{worker.pid}")
        ]
        assert len(matches) == 1, f"no single worker process is {worker_id!r}: {self.workers()}"
        return matches[0]

    def clip_objects(self, task_id: str) -> list[str]:
        return sorted(
            blob.name
            for blob in storage_client().list_blobs(self.settings.clips_bucket, prefix=f"tasks/{task_id}/")
        )

    def upload_objects(self, task_id: str) -> list[str]:
        return sorted(
            blob.name
            for blob in storage_client().list_blobs(
                self.settings.uploads_bucket, prefix=f"uploads/{task_id}/"
            )
        )


def assert_alive(stack: LocalStack) -> None:
    """Fail with the log excerpt of any stack process that died on its own."""
    dead = stack.dead()
    assert not dead, "stack processes died:\n" + "\n".join(
        f"{process.name} ({process.exit_description})\n{process.log_excerpt()}" for process in dead
    )


@contextmanager
def running_stack(
    state_dir: Path,
    *,
    pubsub_emulator_host: str,
    storage_emulator_host: str,
    transcoder_workers: int,
    settings: dict[str, str] | None = None,
    services: Sequence[str] | None = None,
) -> Iterator[E2EStack]:
    """Start the whole stack (own PostgreSQL, shared emulators) and stop it afterwards,
    deleting its topics, subscriptions and buckets. Raises AssertionError at the end if
    one of its processes died on its own while the tests ran."""
    # The postgres user must reach the cluster's folder; pytest's own are private.
    with tempfile.TemporaryDirectory(prefix="idrl-e2e-pg-") as pg_parent:
        os.chmod(pg_parent, 0o711)
        config = StackConfig(
            state_dir=state_dir,
            postgres_dir=Path(pg_parent) / "pg",
            pubsub_emulator_host=pubsub_emulator_host,
            storage_emulator_host=storage_emulator_host,
            transcoder_workers=transcoder_workers,
            services=services,
            settings=isolated_names("e2e") | SHARED_STACK_LIMITS | (settings or {}),
            **free_ports(),
        )
        stack = LocalStack(config)
        engine: Engine | None = None
        try:
            stack.start()
            # No pool: the outage test restarts PostgreSQL under this engine.
            engine = sqlalchemy.create_engine(stack.database_url, poolclass=NullPool)
            yield E2EStack(stack, Settings(**stack.settings_values), engine)
            assert_alive(stack)
        finally:
            stack.stop()
            if engine is not None:
                engine.dispose()
            delete_topology(Settings(**stack.settings_values))
            delete_buckets(Settings(**stack.settings_values))


# --- the database ------------------------------------------------------------------------


def database_answers(engine: Engine) -> bool:
    """Whether PostgreSQL answers a trivial query now (``shared.db.ping``)."""
    try:
        db.ping(engine)
    except sqlalchemy.exc.DBAPIError:
        return False
    return True


# --- what went over task-events ------------------------------------------------------------------


class EventTap:
    """A subscription of its own on the stack's `task-events`: every TaskStatusChanged
    published while it is open, as delivered (redeliveries included)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.path = subscription_path(settings, f"e2e-tap-{uuid.uuid4().hex[:10]}")
        self.deliveries: list[TaskStatusChanged] = []
        self._lock = threading.Lock()
        self._subscriber: pubsub_v1.SubscriberClient | None = None
        self._future = None

    def __enter__(self) -> EventTap:
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.create_subscription(
                name=self.path,
                topic=topic_path(self.settings, self.settings.topic_task_events),
                ack_deadline_seconds=60,
            )
        self._start_pulling()
        return self

    def _start_pulling(self) -> None:
        self._subscriber = pubsub_v1.SubscriberClient()
        self._future = self._subscriber.subscribe(self.path, self._on_message)

    def _stop_pulling(self) -> None:
        assert self._subscriber is not None and self._future is not None
        self._future.cancel()
        self._future.result(timeout=30)
        self._subscriber.close()
        self._subscriber = self._future = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No pull in flight while the block runs; the subscription keeps what arrives.

        For a test that restarts a process (PostgreSQL) while events must wait for it.
        infra.local.process starts it with vfork(), so no gRPC fork handler of this
        process runs in the child.
        """
        self._stop_pulling()
        try:
            yield
        finally:
            self._start_pulling()

    def _on_message(self, message: pubsub_v1.subscriber.message.Message) -> None:
        event = decode(message.data, dict(message.attributes))
        with self._lock:
            self.deliveries.append(event)
        message.ack()

    def __exit__(self, *exc_info: object) -> None:
        self._stop_pulling()
        with pubsub_v1.SubscriberClient() as subscriber:
            subscriber.delete_subscription(subscription=self.path)

    def events(self, task_ids: Sequence[str] | None = None) -> list[TaskStatusChanged]:
        """Distinct events (by event id), for ``task_ids`` when given."""
        with self._lock:
            seen: dict[str, TaskStatusChanged] = {}
            for event in self.deliveries:
                seen.setdefault(event.event_id, event)
        wanted = None if task_ids is None else {str(task_id) for task_id in task_ids}
        return [event for event in seen.values() if wanted is None or str(event.task_id) in wanted]

    def wait_until(self, condition: Callable[[EventTap], bool], timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while not condition(self):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.2)
        return True
