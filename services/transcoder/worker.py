"""The worker: pulls ``video-tasks``, makes the clips, reports on ``task-events``.

One message is one task. Its handling, in order:

1. Read the task through the read-only path; a task already processed, failed,
   canceled or deleted is acked without work (redelivery, duplicates).
2. Claim it: a PostgreSQL session advisory lock keyed by the task id, taken on a
   connection the worker holds while it works. A second worker given the same task
   cannot take the claim and hands its copy back; if the first worker dies, its
   connection closes and the claim goes with it. The claim is a lock, not a write: it
   works in a read-only transaction and under a role that may only SELECT.
3. Count the attempt (the notifier records each ``processing`` event's attempt); a task
   whose earlier attempts all died is failed once ``max_attempts`` is reached.
4. Fetch, probe, make and upload the clips, reporting progress. Every second the
   claim's connection re-reads the task: a cancellation stops ffmpeg at once.
5. Re-check the task, publish the outcome, wait until the notifier has recorded it
   (bounded), ack, and let go of the claim: whoever takes the task next sees the outcome.

Transient errors are retried in place with exponential backoff (tenacity), a bounded
number of times, then fail the task with the reason. Permanent ones fail it at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import TypeVar

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud import pubsub_v1, storage
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from services.transcoder.errors import PermanentFailure, ProcessingStopped, TransientFailure
from services.transcoder.fetch import FetchPolicy, Resolver, UrlFetcher, fetch_upload, system_resolver
from services.transcoder.pipeline import DEFAULT_LOGO, LocalClip, ProgressThrottle, iter_clips
from services.transcoder.plan import clip_object_name, poster_object_name, task_prefix
from services.transcoder.probe import SourceLimits, probe_source
from services.transcoder.runner import StopSignal
from shared.config import Settings
from shared.db import read_only
from shared.events import (
    ClipOutput,
    MalformedEvent,
    Publisher,
    TaskStatusChanged,
    TaskSubmitted,
    decode,
    keep_pulling,
    subscription_path,
)
from shared.lifecycle import TaskStatus
from shared.storage import gs_uri

log = logging.getLogger(__name__)

T = TypeVar("T")

CANCELED = "canceled"
DRAINING = "draining"
LOST_CLAIM = "lost the claim on the task"
# A task another worker holds comes back after this pause rather than at once.
BUSY_TASK_PAUSE_SECONDS = 5.0
# After an unexpected error, the message comes back after this pause rather than at once.
UNEXPECTED_ERROR_PAUSE_SECONDS = 1.0
PUBLISH_TIMEOUT_SECONDS = 60.0
_RETRY_MAX_SECONDS = 30.0

_TASK_STATE = text("SELECT status, attempt, deleted_at IS NOT NULL FROM tasks WHERE id = :id")


@dataclass(frozen=True)
class TaskState:
    status: TaskStatus
    attempt: int
    deleted: bool

    @property
    def settled(self) -> bool:
        """Nothing left to do for this task."""
        return self.deleted or self.status.is_final


def _read_state(conn: Connection, task_id: uuid.UUID) -> TaskState | None:
    row = conn.execute(_TASK_STATE, {"id": task_id}).first()
    if row is None:
        return None
    return TaskState(TaskStatus(row[0]), int(row[1]), bool(row[2]))


def read_task_state(engine: Engine, task_id: uuid.UUID) -> TaskState | None:
    """The task's status, attempt and deletion, read through the read-only path."""
    with read_only(engine) as conn:
        return _read_state(conn, task_id)


class ClaimLost(Exception):
    """The database session holding a task's claim failed: the lock may be gone."""


class TaskClaim:
    """This worker's claim on a task: a session advisory lock on a connection held for
    as long as the work lasts. Reads of the task go through the same connection, so a
    broken connection (which releases the lock) is noticed at the next read."""

    def __init__(self, engine: Engine, task_id: uuid.UUID) -> None:
        self._engine = engine
        self.task_id = task_id
        # Advisory lock keys are 64-bit: the first half of the task's UUID.
        self._key = int.from_bytes(task_id.bytes[:8], "big", signed=True)
        self._conn: Connection | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        conn = self._engine.connect()
        try:
            with conn.begin():
                conn.execute(text("SET TRANSACTION READ ONLY"))
                taken = conn.execute(
                    text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}
                ).scalar_one()
        except BaseException:
            conn.close()
            raise
        if not taken:
            conn.close()
            return False
        self._conn = conn
        return True

    def state(self) -> TaskState | None:
        """Re-read the task on the claim's connection; :class:`ClaimLost` if the
        connection failed, since the lock may have gone with it."""
        if self._conn is None:
            raise ClaimLost("the claim is not held")
        with self._lock:
            try:
                with self._conn.begin():
                    self._conn.execute(text("SET TRANSACTION READ ONLY"))
                    return _read_state(self._conn, self.task_id)
            except (SQLAlchemyError, OSError) as exc:
                # pg8000 lets a reset socket's OSError through unwrapped.
                raise ClaimLost(f"the claim's database session failed: {_first_line(exc)}") from exc

    def release(self) -> None:
        if self._conn is None:
            return
        with self._lock:
            # Closing the session is what releases a session lock; the connection is
            # discarded rather than pooled, so no pooled connection ever holds one.
            self._conn.invalidate()
            self._conn.close()
            self._conn = None


class Worker:
    """Handles ``TaskSubmitted`` messages; :meth:`run` pulls them until shut down."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        storage_client: storage.Client,
        publisher: Publisher,
        resolver: Resolver = system_resolver,
        worker_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.storage = storage_client
        self.publisher = publisher
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.fetcher = UrlFetcher(
            FetchPolicy(
                allow_loopback=settings.allow_loopback_sources,
                max_bytes=settings.max_source_bytes,
                connect_timeout=settings.fetch_connect_timeout_seconds,
                read_timeout=settings.fetch_read_timeout_seconds,
                total_timeout=settings.fetch_total_timeout_seconds,
                min_bytes_per_second=settings.fetch_min_bytes_per_second,
                throughput_grace=settings.fetch_throughput_grace_seconds,
                max_redirects=settings.fetch_max_redirects,
            ),
            resolver=resolver,
        )
        self.limits = SourceLimits(
            max_bytes=settings.max_source_bytes,
            max_seconds=settings.max_source_seconds,
            max_width=settings.max_source_width,
            max_height=settings.max_source_height,
        )
        self.logo = Path(settings.logo_path) if settings.logo_path else DEFAULT_LOGO
        self._draining = threading.Event()
        self._active: set[StopSignal] = set()
        self._active_lock = threading.Lock()

    # --- the pull loop ------------------------------------------------------------------

    def flow_control(self) -> pubsub_v1.types.FlowControl:
        return pubsub_v1.types.FlowControl(
            max_messages=self.settings.transcoder_slots,
            # Whole seconds: the stream's ack deadline is derived from these.
            max_lease_duration=int(self.settings.transcoder_max_lease_seconds),
            max_duration_per_lease_extension=int(self.settings.transcoder_lease_extension_seconds),
        )

    def run(self, shutdown: threading.Event) -> None:
        """Pull until ``shutdown`` is set, then drain: stop pulling, give the clips in
        progress ``drain_grace_seconds`` to finish, stop and hand back the rest. A pull
        that ends for good meanwhile (the subscription missing for a moment) is opened
        again after a pause; it does not end the worker."""
        path = subscription_path(self.settings, self.settings.subscription_transcoder)
        if not self.logo.is_file():
            raise SystemExit(f"logo card not found: {self.logo}")
        log.info("pulling %s, %d at a time", path, self.settings.transcoder_slots)
        # The cancel after the drain nacks what was pulled but not started, and returns
        # once the running callbacks have acked or nacked (leases are kept until then).
        keep_pulling(path, self.handle, self.flow_control(), shutdown, before_cancel=self.drain)
        self.fetcher.close()
        log.info("stopped")

    def drain(self) -> None:
        """Take no new task; stop the running ones if the grace period runs out."""
        if self._draining.is_set():
            return
        self._draining.set()
        log.info(
            "draining: %d task(s) running, %.0f s to finish",
            len(self._active),
            self.settings.drain_grace_seconds,
        )
        timer = threading.Timer(self.settings.drain_grace_seconds, self._stop_all, args=(DRAINING,))
        timer.daemon = True
        timer.start()

    def _stop_all(self, why: str) -> None:
        with self._active_lock:
            for stop in self._active:
                stop.set(why)

    # --- one message --------------------------------------------------------------------

    def handle(self, message: pubsub_v1.subscriber.message.Message) -> None:
        """The streaming-pull callback for one message: ack once the task has an outcome
        (or needs none), nack to hand it back.

        An error nothing below expected (the database gone for longer than its retries, a
        library's surprise) must not end the pull: an exception leaving this callback
        makes the client library close the stream, which stops the worker. It is logged
        with its traceback and the message handed back after a pause, so a dependency
        that is down is not hammered; a task that keeps failing after it started is ended
        by its attempt count.
        """
        try:
            self._handle(message)
        except Exception:  # noqa: BLE001 - logged in full, and the message handed back
            log.exception(
                "unexpected error; handing the message back",
                extra={"message_id": message.message_id, "task_id": message.attributes.get("task_id")},
            )
            self._draining.wait(UNEXPECTED_ERROR_PAUSE_SECONDS)
            message.nack()

    def _handle(self, message: pubsub_v1.subscriber.message.Message) -> None:
        try:
            event = decode(message.data, dict(message.attributes))
        except MalformedEvent as exc:
            log.error(
                "dropping a message that can never be processed: %s",
                exc,
                extra={"message_id": message.message_id},
            )
            message.ack()
            return
        if not isinstance(event, TaskSubmitted):
            log.error(
                "dropping a %s on the tasks subscription",
                event.event_type,
                extra={"task_id": str(event.task_id)},
            )
            message.ack()
            return
        extra = {"task_id": str(event.task_id)}
        if self._draining.is_set():
            message.nack()
            return
        state = self._retry_db(lambda: read_task_state(self.engine, event.task_id))
        if state is None:
            log.error("no such task; dropping its message", extra=extra)
            message.ack()
            return
        if state.settled:
            log.info(
                "task already %s; acking without work",
                "deleted" if state.deleted else state.status,
                extra=extra,
            )
            message.ack()
            return
        claim = TaskClaim(self.engine, event.task_id)
        if not self._retry_db(claim.try_acquire):
            log.info("another worker holds the task; handing the message back", extra=extra)
            self._draining.wait(BUSY_TASK_PAUSE_SECONDS)
            message.nack()
            return
        try:
            self._handle_claimed(event, message, claim)
        finally:
            claim.release()

    def _handle_claimed(self, task: TaskSubmitted, message, claim: TaskClaim) -> None:
        extra = {"task_id": str(task.task_id)}
        state = claim.state()
        if state is None or state.settled:
            message.ack()
            return
        if state.attempt >= self.settings.max_attempts:
            reason = f"processing was interrupted {state.attempt} times; giving up"
            log.warning(reason, extra=extra)
            self._finish(
                claim, message, self._event(task, TaskStatus.FAILED, state.attempt, failure_reason=reason)
            )
            return

        attempt = state.attempt + 1
        stop = StopSignal()
        with self._active_lock:
            self._active.add(stop)
        try:
            self._work(task, message, claim, attempt, stop)
        finally:
            with self._active_lock:
                self._active.discard(stop)

    def _work(self, task: TaskSubmitted, message, claim: TaskClaim, attempt: int, stop: StopSignal) -> None:
        extra = {"task_id": str(task.task_id)}
        # Registered before this check, so a drain that starts later stops it through
        # the grace timer, and one that started earlier is seen here.
        if self._draining.is_set():
            message.nack()
            return
        self._publish(self._event(task, TaskStatus.PROCESSING, attempt)).result(PUBLISH_TIMEOUT_SECONDS)
        log.info("processing, attempt %d", attempt, extra=extra)
        watching = threading.Event()
        watcher = threading.Thread(
            target=self._watch, args=(claim, stop, watching), daemon=True, name=f"watch-{task.task_id}"
        )
        watcher.start()
        started = time.monotonic()
        try:
            outputs = self._process(task, attempt, stop)
            outcome = self._event(task, TaskStatus.PROCESSED, attempt, progress=100, outputs=outputs)
        except ProcessingStopped as stopped:
            self._stopped(task, attempt, message, stopped.why)
            return
        except PermanentFailure as failure:
            outcome = self._event(task, TaskStatus.FAILED, attempt, failure_reason=failure.reason)
        except TransientFailure as failure:
            # Out of in-place tries (storage down longer than they last), or not retried
            # in place at all (ffmpeg could not write: this machine's problem): the task
            # goes back to the queue for a later delivery, perhaps on another worker,
            # bounded by the attempt count. On the last attempt there is no other
            # delivery to hand it to: it fails here, with this cause.
            if attempt < self.settings.max_attempts:
                log.warning("transient failure (%s); handing the task back", failure.reason, extra=extra)
                message.nack()
                return
            outcome = self._event(
                task,
                TaskStatus.FAILED,
                attempt,
                failure_reason=(f"{failure.reason}; gave up after {attempt} attempts"),
            )
        finally:
            watching.set()
            watcher.join()

        latest = claim.state()
        if latest is None or latest.deleted or latest.status is TaskStatus.CANCELED:
            self._stopped(task, attempt, message, CANCELED)
            return
        if latest.status.is_final:
            message.ack()  # decided elsewhere already; never a second, different outcome
            return
        if outcome.status is TaskStatus.FAILED:
            self._delete_outputs(task.task_id)
        log.info(
            "%s in %.1f s%s",
            outcome.status,
            time.monotonic() - started,
            f": {outcome.failure_reason}" if outcome.failure_reason else "",
            extra=extra,
        )
        self._finish(claim, message, outcome)

    def _stopped(self, task: TaskSubmitted, attempt: int, message, why: str) -> None:
        extra = {"task_id": str(task.task_id)}
        if why == CANCELED:
            try:
                deleted = self._delete_outputs(task.task_id)
            except TransientFailure as failure:
                # The api deletes a canceled task's objects as well; the task is over.
                log.warning("partial outputs not deleted: %s", failure.reason, extra=extra)
                deleted = 0
            log.info("canceled: ffmpeg stopped, %d partial output(s) deleted", deleted, extra=extra)
            self._publish(self._event(task, TaskStatus.CANCELED, attempt))
            message.ack()
            return
        log.info("stopped (%s); handing the task back", why, extra=extra)
        message.nack()

    def _finish(self, claim: TaskClaim, message, outcome: TaskStatusChanged) -> None:
        """Publish the outcome, wait (bounded) until the notifier recorded it, ack."""
        self._publish(outcome).result(PUBLISH_TIMEOUT_SECONDS)
        deadline = time.monotonic() + self.settings.outcome_confirm_seconds
        while time.monotonic() < deadline:
            state = claim.state()
            if state is None or state.settled:
                break
            time.sleep(min(0.2, self.settings.cancel_poll_seconds))
        else:
            log.warning(
                "the outcome is not recorded yet; letting go of the task anyway",
                extra={"task_id": str(outcome.task_id)},
            )
        message.ack()

    def _watch(self, claim: TaskClaim, stop: StopSignal, done: threading.Event) -> None:
        """Re-read the task every ``cancel_poll_seconds`` while it is worked on."""
        while not done.wait(self.settings.cancel_poll_seconds):
            try:
                state = claim.state()
            except ClaimLost as exc:
                # Another worker may take the task now, so this one must not finish it.
                log.warning("%s; stopping", exc, extra={"task_id": str(claim.task_id)})
                stop.set(LOST_CLAIM)
                return
            if state is None or state.deleted or state.status is TaskStatus.CANCELED:
                stop.set(CANCELED)
                return

    # --- the work -----------------------------------------------------------------------

    def _process(self, task: TaskSubmitted, attempt: int, stop: StopSignal) -> tuple[ClipOutput, ...]:
        with TemporaryDirectory(prefix=f"task-{task.task_id}-", dir=self.settings.scratch_dir) as scratch:
            workdir = Path(scratch)
            source = workdir / "source"
            self._retry(lambda: self._fetch(task.source, source, stop), stop)
            stop.raise_if_set()
            info = probe_source(source, self.limits, timeout=self.settings.probe_timeout_seconds)
            throttle = ProgressThrottle(
                lambda percent: self._publish(
                    self._event(task, TaskStatus.PROCESSING, attempt, progress=percent)
                ),
                self.settings.progress_interval_seconds,
            )
            outputs = []
            for clip in iter_clips(
                source,
                info,
                task.spec,
                workdir=workdir,
                logo=self.logo,
                ffmpeg_timeout=self.settings.ffmpeg_timeout_seconds,
                stop=stop,
                on_progress=throttle,
            ):
                outputs.append(self._retry(lambda clip=clip: self._upload(task.task_id, clip), stop))
                clip.path.unlink()
                clip.poster_path.unlink()
                stop.raise_if_set()
            return tuple(outputs)

    def _fetch(self, source: str, destination: Path, stop: StopSignal) -> int:
        if source.startswith("gs://"):
            with _storage_errors("reading the uploaded source"):
                return fetch_upload(
                    self.storage,
                    source,
                    destination,
                    bucket=self.settings.uploads_bucket,
                    max_bytes=self.settings.max_source_bytes,
                )
        return self.fetcher.fetch(source, destination, stop=stop)

    def _upload(self, task_id: uuid.UUID, clip: LocalClip) -> ClipOutput:
        bucket = self.storage.bucket(self.settings.clips_bucket)
        clip_name = clip_object_name(task_id, clip.part)
        poster_name = poster_object_name(task_id, clip.part)
        # A clip larger than the chunk goes up as a resumable upload holding one chunk
        # in memory at a time (the client's default chunk is 100 MB).
        chunk = self.settings.upload_chunk_bytes
        with _storage_errors("storing a clip"):
            # Retries are tenacity's (one policy for every transient error), not the
            # client's own; the names are deterministic, so a retry overwrites.
            bucket.blob(clip_name, chunk_size=chunk).upload_from_filename(
                str(clip.path), content_type="video/mp4", retry=None
            )
            bucket.blob(poster_name, chunk_size=chunk).upload_from_filename(
                str(clip.poster_path), content_type="image/jpeg", retry=None
            )
        return ClipOutput(
            index=clip.part.index,
            uri=gs_uri(self.settings.clips_bucket, clip_name),
            poster_uri=gs_uri(self.settings.clips_bucket, poster_name),
            duration_seconds=clip.duration_seconds,
            size_bytes=clip.size_bytes,
        )

    def _delete_outputs(self, task_id: uuid.UUID) -> int:
        deleted = 0
        with _storage_errors("deleting partial outputs"):
            for blob in self.storage.list_blobs(self.settings.clips_bucket, prefix=task_prefix(task_id)):
                try:
                    blob.delete()
                    deleted += 1
                except gexc.NotFound:
                    pass  # the api's delete got there first
        return deleted

    # --- helpers ------------------------------------------------------------------------

    def _retry(self, operation: Callable[[], T], stop: StopSignal) -> T:
        """Run ``operation``, retrying transient failures with exponential backoff; a
        stop interrupts the wait between tries. When the tries run out the failure is
        still transient, with the last reason: the task is handed back for another
        delivery, or fails with it on its last attempt (``_work``)."""
        tries = self.settings.max_attempts
        retrying = Retrying(
            retry=retry_if_exception_type(TransientFailure),
            stop=stop_after_attempt(tries),
            wait=wait_exponential(multiplier=self.settings.retry_initial_seconds, max=_RETRY_MAX_SECONDS),
            sleep=stop.wait,
            before_sleep=lambda state: log.warning(
                "transient failure, try %d of %d: %s",
                state.attempt_number,
                tries,
                state.outcome.exception(),
            ),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    stop.raise_if_set()
                    return operation()
        except TransientFailure as failure:
            raise TransientFailure(f"{failure.reason} (gave up after {tries} tries)") from failure
        raise AssertionError("unreachable")

    def _retry_db(self, operation: Callable[[], T]) -> T:
        retrying = Retrying(
            retry=retry_if_exception_type((DBAPIError, OSError)),
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=wait_exponential(multiplier=self.settings.retry_initial_seconds, max=_RETRY_MAX_SECONDS),
            reraise=True,
        )
        return retrying(operation)

    def _event(
        self,
        task: TaskSubmitted,
        status: TaskStatus,
        attempt: int,
        *,
        progress: int = 0,
        outputs: tuple[ClipOutput, ...] = (),
        failure_reason: str | None = None,
    ) -> TaskStatusChanged:
        return TaskStatusChanged(
            task_id=task.task_id,
            status=status,
            attempt=attempt,
            progress=progress,
            outputs=outputs,
            failure_reason=failure_reason,
            worker_id=self.worker_id,
        )

    def _publish(self, event: TaskStatusChanged):
        future = self.publisher.publish(self.settings.topic_task_events, event)
        extra = {"task_id": str(event.task_id), "status": str(event.status), "progress": event.progress}

        def logged(done) -> None:
            if done.exception() is not None:
                log.warning("publishing a status change failed: %s", done.exception(), extra=extra)

        future.add_done_callback(logged)
        return future


@contextmanager
def _storage_errors(doing: str) -> Iterator[None]:
    """Turn storage and network errors into the pipeline's failure kinds."""
    try:
        yield
    except (
        gexc.ServerError,
        gexc.TooManyRequests,
        gexc.NotFound,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        auth_exceptions.TransportError,
    ) as exc:
        log.warning("%s failed: %s", doing, exc)
        raise TransientFailure(f"{doing} failed ({_storage_summary(exc)})") from exc
    except gexc.ClientError as exc:
        log.warning("%s was refused: %s", doing, exc)
        raise PermanentFailure(f"{doing} was refused ({_storage_summary(exc)})") from exc


def _storage_summary(exc: BaseException) -> str:
    """What a task's owner may read of a storage error: its HTTP status, never the
    request line, which names the endpoint and the bucket (the log keeps it whole)."""
    code = getattr(exc, "code", None)
    return f"storage answered {int(code)}" if isinstance(code, int) else "storage did not answer"


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
