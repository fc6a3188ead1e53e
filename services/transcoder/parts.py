"""One part of a task made across the fleet (``PartSubmitted``), on whichever worker its
message reaches: admit it, claim it, make it, and report the task processed when it was
the last part to be recorded.

A part counts its own attempts (the notifier keeps them in ``task_parts``), so a failed
part is retried alone; its task fails, naming the part, only once the part has used
them. Every part's run watches its task: a cancellation stops its ffmpeg within
``cancel_poll_seconds``, and a task settled elsewhere (another part failed it) stops it
too. The worker that records the last part reports the task ``processed`` with every
clip; two that finish together may both do so, and the notifier applies the first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from google.cloud import pubsub_v1
from sqlalchemy.engine import Engine

from services.transcoder.claim import TaskClaim, read_task_state
from services.transcoder.decisions import (
    Ack,
    Begin,
    Complete,
    Drop,
    HandBack,
    Report,
    RunResult,
    admit_part,
    complete,
    conclude_part,
    recheck,
    whole_parts,
)
from services.transcoder.errors import PermanentFailure, ProcessingStopped, TransientFailure
from services.transcoder.outcomes import PUBLISH_TIMEOUT_SECONDS, Decision, Outcomes
from services.transcoder.plan import clip_formats
from services.transcoder.retries import RetryPolicy
from services.transcoder.runner import StopSignal
from services.transcoder.stages import AttemptStages
from shared.config import Settings
from shared.events import ClipOutput, PartSubmitted
from shared.lifecycle import TaskStatus
from shared.logging import task_logger

log = task_logger(__name__)

BUSY_PART_PAUSE_SECONDS = 5.0

_Found = TypeVar("_Found")


class PartHandler:
    """Handles the ``PartSubmitted`` messages a worker pulls."""

    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        stages: AttemptStages,
        outcomes: Outcomes,
        retry: RetryPolicy,
        stoppable: Callable[[], AbstractContextManager[StopSignal]],
        draining: Callable[[], bool],
        pause: Callable[[float], object],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.stages = stages
        self.outcomes = outcomes
        self.reporter = outcomes.reporter
        self.retry = retry
        self._stoppable = stoppable
        self._draining = draining
        self._pause = pause

    def handle(self, part: PartSubmitted, message: pubsub_v1.subscriber.message.Message) -> None:
        if self._draining():
            message.nack()
            return
        state = self.retry.database(lambda: read_task_state(self.engine, part.task_id))
        arrival = admit_part(state, part.index, 0, False, self.settings.max_attempts)
        if isinstance(arrival, Drop | Ack):
            # A task gone or settled; the rest is decided under the part's claim.
            self.outcomes.carry_out(arrival, part.task_id, message)
            return
        claim = TaskClaim(self.engine, part.task_id, part.index)
        if not self.retry.database(claim.try_acquire):
            log.info("another worker holds part %d; handing the message back", part.index)
            self._pause(BUSY_PART_PAUSE_SECONDS)
            message.nack()
            return
        try:
            self._work_claimed(part, message, claim)
        finally:
            claim.release()

    def _work_claimed(self, part: PartSubmitted, message, claim: TaskClaim) -> None:
        state = claim.state()
        decision: Decision | Begin | Complete = admit_part(
            state,
            part.index,
            claim.part_attempt(),
            _holds_part(claim.recorded_clips(), part),
            self.settings.max_attempts,
        )
        task_attempt = state.attempt if state is not None else 0
        if isinstance(decision, Begin):
            decision = self._attempt(part, claim, decision.attempt, task_attempt)
        elif isinstance(decision, Report):
            log.warning("%s", decision.failure_reason)
        if isinstance(decision, Complete):
            decision = self._complete(part, claim, task_attempt)
        self.outcomes.carry_out(decision, part.task_id, message, claim)

    def _attempt(
        self, part: PartSubmitted, claim: TaskClaim, attempt: int, task_attempt: int
    ) -> Decision | Complete:
        """Announce the part's attempt, make the part under the task's watch, and decide
        what its end means."""
        with self._stoppable() as stop:
            if self._draining():
                return HandBack("draining")
            self.reporter.publish(part.task_id, TaskStatus.PROCESSING, attempt, part=part.index).result(
                PUBLISH_TIMEOUT_SECONDS
            )
            log.info("part %d of %d, attempt %d", part.index, part.parts_total, attempt)
            started = time.monotonic()

            def announce(outputs: tuple[ClipOutput, ...]) -> object:
                # Not awaited: the processed event names every clip again.
                recorded = {clip.index for clip in claim.recorded_clips()} | {part.index}
                progress = min(99, 100 * len(recorded) // part.parts_total)
                return self.reporter.publish(
                    part.task_id,
                    TaskStatus.PROCESSING,
                    attempt,
                    progress=progress,
                    outputs=outputs,
                    part=part.index,
                )

            run: RunResult
            with claim.watch(stop, self.settings.cancel_poll_seconds):
                try:
                    run = self.stages.run_part(part, stop, announce)
                except (ProcessingStopped, PermanentFailure, TransientFailure) as ended:
                    run = ended
        decision = conclude_part(run, part.index, attempt, task_attempt, self.settings.max_attempts)
        if isinstance(decision, HandBack) and not self._poll(claim, lambda: claim.part_attempt() >= attempt):
            # Its next delivery counts from the attempts recorded: this one must be among them.
            log.warning("part %d's attempt %d is not recorded yet", part.index, attempt)
        if isinstance(decision, Report):
            decision = recheck(claim.state(), decision)
        log.info(
            "part %d ended in %.1f s: %s", part.index, time.monotonic() - started, type(decision).__name__
        )
        return decision

    def _complete(self, part: PartSubmitted, claim: TaskClaim, task_attempt: int) -> Decision:
        """Once the notifier recorded this part's clips: report the task processed if
        every part's are, else ack. A part whose clips are not recorded in time is
        handed back, and its next delivery asks again."""

        def recorded_with_part() -> tuple[ClipOutput, ...]:
            found = claim.recorded_clips()
            return found if _holds_part(found, part) else ()

        recorded = self._poll(claim, recorded_with_part)
        if not recorded:
            return HandBack(f"part {part.index}'s clips are not recorded yet")
        if not complete(recorded, part.parts_total, clip_formats(part.spec)):
            return Ack(f"part {part.index} recorded")
        outputs = tuple(sorted(recorded, key=lambda clip: (clip.index, clip.format)))
        report = recheck(claim.state(), Report(TaskStatus.PROCESSED, task_attempt, outputs=outputs))
        if isinstance(report, Report):
            log.info("every part is recorded: the task is processed")
        return report

    def _poll(self, claim: TaskClaim, read: Callable[[], _Found]) -> _Found:
        """``read`` until it is truthy, at most ``outcome_confirm_seconds``."""
        return claim.poll(
            read, self.settings.outcome_confirm_seconds, min(0.2, self.settings.cancel_poll_seconds)
        )


def _holds_part(recorded: tuple[ClipOutput, ...], part: PartSubmitted) -> bool:
    """Whether ``recorded`` holds the part in every format of its spec."""
    return part.index in whole_parts(recorded, clip_formats(part.spec))
