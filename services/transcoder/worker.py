"""The worker: pulls ``video-tasks``, makes the clips, reports on ``task-events``.

One message is one task, or one part of a task made across the fleet (``parts.py``).
A task's stages, in order (what decides at each turn is in
``decisions.py``; this module carries the decisions out):

1. **Admit**: read the task through the read-only path; a task already processed,
   failed, canceled or deleted is acked without work (redelivery, duplicates).
2. **Claim** it (``claim.py``): a second worker given the same task hands its copy back.
   On the claim's connection the task is admitted again: one whose earlier attempts all
   died is failed once ``max_attempts`` is reached; otherwise attempt ``attempt + 1``
   is announced (the notifier records each ``processing`` event's attempt).
3. **Fetch** the source, **probe** it, **make the clips** part by part and **upload**
   each part's clips (``stages.py``, ``outputs.py``), announcing them at once with the
   progress; parts an earlier attempt recorded are not made again. Every second the
   claim's connection re-reads the task: a cancellation stops ffmpeg at once. A task of
   at least ``FANOUT_MIN_PARTS`` parts is instead cut into its parts' segments, which
   are stored, and its parts handed to the fleet; its message is then acked.
4. **Report** (``outcomes.py``): re-check the task, publish the outcome, wait until
   the notifier has recorded it (bounded), ack, and let go of the claim: whoever takes
   the task next sees the outcome.

Transient errors are retried in place (``retries.py``), then hand the task back to a
later delivery; permanent ones fail it at once.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from google.cloud import pubsub_v1, storage
from sqlalchemy.engine import Engine

from services.transcoder.cards import CardFontMissing, check_card_font
from services.transcoder.claim import TaskClaim, read_task_state
from services.transcoder.decisions import (
    Ack,
    Begin,
    Drop,
    FannedOut,
    Report,
    RunResult,
    StopReason,
    admit,
    conclude,
    conclude_in_place,
    recheck,
    whole_parts,
)
from services.transcoder.errors import (
    PermanentFailure,
    ProcessingStopped,
    TransientFailure,
)
from services.transcoder.fetch import Resolver, system_resolver
from services.transcoder.outcomes import PUBLISH_TIMEOUT_SECONDS, Decision, Outcomes
from services.transcoder.outputs import ClipStore
from services.transcoder.parts import PartHandler
from services.transcoder.plan import clip_formats
from services.transcoder.reports import StatusReporter
from services.transcoder.retries import RetryPolicy
from services.transcoder.runner import StopSignal
from services.transcoder.stages import AttemptStages
from shared.config import Settings
from shared.events import ClipOutput, MalformedEvent, PartSubmitted, TaskSubmitted, decode
from shared.lifecycle import TaskStatus
from shared.logging import about_task, task_logger
from shared.pubsub import Publisher, keep_pulling, subscription_path

log = task_logger(__name__)
# What the pipeline logs while it works on a task (ffmpeg's errors) concerns the task too.
task_logger("services.transcoder.fetch")
task_logger("services.transcoder.runner")
task_logger("services.transcoder.pipeline")

# A task another worker holds comes back after this pause rather than at once.
BUSY_TASK_PAUSE_SECONDS = 5.0
# After an unexpected error, the message comes back after this pause rather than at once.
UNEXPECTED_ERROR_PAUSE_SECONDS = 1.0


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
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}"
        self.clips = ClipStore(
            storage_client, bucket=settings.clips_bucket, chunk_bytes=settings.upload_chunk_bytes
        )
        self.reporter = StatusReporter(publisher, settings.topic_task_events, self.worker_id)
        self.retry = RetryPolicy.from_settings(settings)
        self.stages = AttemptStages(
            settings,
            storage_client=storage_client,
            clips=self.clips,
            reporter=self.reporter,
            retry=self.retry,
            resolver=resolver,
        )
        self.outcomes = Outcomes(settings, clips=self.clips, reporter=self.reporter, retry=self.retry)
        self._draining = threading.Event()
        self._active: set[StopSignal] = set()
        self._active_lock = threading.Lock()
        self.parts = PartHandler(
            settings,
            engine=engine,
            stages=self.stages,
            outcomes=self.outcomes,
            retry=self.retry,
            stoppable=self._stoppable,
            draining=self._draining.is_set,
            pause=self._draining.wait,
        )

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
        if not self.stages.logo.is_file():
            raise SystemExit(f"logo card not found: {self.stages.logo}")
        try:
            engine = check_card_font(self.stages.card_font)
        except CardFontMissing as exc:
            raise SystemExit(str(exc)) from None
        log.info("card text set in %s, %s layout", self.stages.card_font, engine)
        log.info("pulling %s, %d at a time", path, self.settings.transcoder_slots)
        # The cancel after the drain nacks what was pulled but not started, and returns
        # once the running callbacks have acked or nacked (leases are kept until then).
        keep_pulling(path, self.handle, self.flow_control(), shutdown, before_cancel=self.drain)
        self.stages.close()
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
        timer = threading.Timer(
            self.settings.drain_grace_seconds, self._stop_all, args=(StopReason.DRAINING,)
        )
        timer.daemon = True
        timer.start()

    def _stop_all(self, why: StopReason) -> None:
        with self._active_lock:
            for stop in self._active:
                stop.set(why)

    @contextmanager
    def _stoppable(self) -> Iterator[StopSignal]:
        """A stop signal for one run, which a drain's grace timer sets."""
        stop = StopSignal()
        with self._active_lock:
            self._active.add(stop)
        try:
            yield stop
        finally:
            with self._active_lock:
                self._active.discard(stop)

    # --- one message: admit, claim --------------------------------------------------------

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
        with about_task(message.attributes.get("task_id")):
            try:
                self._admit_and_claim(message)
            except Exception:  # noqa: BLE001 - logged in full, and the message handed back
                log.exception(
                    "unexpected error; handing the message back", extra={"message_id": message.message_id}
                )
                self._draining.wait(UNEXPECTED_ERROR_PAUSE_SECONDS)
                message.nack()

    def _admit_and_claim(self, message: pubsub_v1.subscriber.message.Message) -> None:
        task = _task_of(message)
        if task is None:
            message.ack()
            return
        if isinstance(task, PartSubmitted):
            with about_task(task.task_id):
                self.parts.handle(task, message)
            return
        with about_task(task.task_id):
            if self._draining.is_set():
                message.nack()  # pulled as the drain began: another worker takes it
                return
            state = self.retry.database(lambda: read_task_state(self.engine, task.task_id))
            arrival = admit(state, self.settings.max_attempts)
            if isinstance(arrival, Drop | Ack):
                self.outcomes.carry_out(arrival, task.task_id, message)
                return
            claim = TaskClaim(self.engine, task.task_id)
            if not self.retry.database(claim.try_acquire):
                log.info("another worker holds the task; handing the message back")
                self._draining.wait(BUSY_TASK_PAUSE_SECONDS)
                message.nack()
                return
            try:
                self._work_claimed(task, message, claim)
            finally:
                claim.release()

    def _work_claimed(self, task: TaskSubmitted, message, claim: TaskClaim) -> None:
        """Admit the task again, now that no other worker can change it: give up on it,
        or run the next attempt; then carry out what was decided."""
        state = claim.state()
        decision: Decision | Begin = admit(state, self.settings.max_attempts)
        if isinstance(decision, Begin):
            handed_out = state is not None and state.handed_out
            decision = self._attempt(task, claim, decision.attempt, handed_out)
        elif isinstance(decision, Report):
            log.warning("%s", decision.failure_reason)
        self.outcomes.carry_out(decision, task.task_id, message, claim)

    # --- one attempt ---------------------------------------------------------------------

    def _attempt(self, task: TaskSubmitted, claim: TaskClaim, attempt: int, handed_out: bool) -> Decision:
        """Announce the attempt, run its stages under the cancel watch, and decide what
        its end means. ``handed_out``: an earlier run handed the task's parts out."""
        with self._stoppable() as stop:
            # Registered before this check, so a drain that starts later stops the run
            # through the grace timer, and one that started earlier is seen here.
            if self._draining.is_set():
                return conclude(ProcessingStopped(StopReason.DRAINING), attempt, self.settings.max_attempts)
            self.reporter.publish(task.task_id, TaskStatus.PROCESSING, attempt).result(
                PUBLISH_TIMEOUT_SECONDS
            )
            log.info("processing, attempt %d", attempt)
            started = time.monotonic()
            made = list(claim.recorded_clips())
            if made:
                log.info("resuming: %d clip(s) already recorded", len(made))
            run: RunResult
            with claim.watch(stop, self.settings.cancel_poll_seconds):
                try:
                    run = self.stages.run(task, attempt, stop, made, handed_out=handed_out)
                except (ProcessingStopped, PermanentFailure, TransientFailure) as ended:
                    run = ended
        every = min(0.2, self.settings.cancel_poll_seconds)
        if isinstance(run, FannedOut) and not claim.wait_handed_out(
            self.settings.outcome_confirm_seconds, every
        ):
            log.warning("the parts handed out are not recorded yet; acking the task anyway")
        decision: Decision = conclude(run, attempt, self.settings.max_attempts)
        if isinstance(run, FannedOut) and run.in_place is not None:
            formats, part = clip_formats(task.spec), run.in_place

            def recorded_with_part() -> tuple[ClipOutput, ...]:
                found = claim.recorded_clips()
                return found if part in whole_parts(found, formats) else ()

            recorded = claim.poll(recorded_with_part, self.settings.outcome_confirm_seconds, every)
            decision = conclude_in_place(run, recorded, attempt, formats)
        if isinstance(decision, Report) and decision.status is TaskStatus.FAILED:
            # The clips made before the failure stay the task's (docs/transcoder.md).
            decision = dataclasses.replace(decision, outputs=tuple(made))
        if isinstance(decision, Report):
            decision = recheck(claim.state(), decision)
        if isinstance(decision, Report):
            log.info(
                "%s in %.1f s%s",
                decision.status,
                time.monotonic() - started,
                f": {decision.failure_reason}" if decision.failure_reason else "",
            )
        return decision


def _task_of(message: pubsub_v1.subscriber.message.Message) -> TaskSubmitted | PartSubmitted | None:
    """The task or part a message submits; None (logged) for one that can never be processed."""
    try:
        event = decode(message.data, dict(message.attributes))
    except MalformedEvent as exc:
        log.error(
            "dropping a message that can never be processed: %s",
            exc,
            extra={"message_id": message.message_id},
        )
        return None
    if not isinstance(event, TaskSubmitted | PartSubmitted):
        log.error(
            "dropping a %s on the tasks subscription", event.event_type, extra={"task_id": str(event.task_id)}
        )
        return None
    return event
