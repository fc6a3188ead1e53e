"""What the worker does with a task at each turn, without any I/O: the decision table.

Three moments decide, each from what is known then to one action:

- :func:`admit`, when a task arrives (before the claim, and again on the claim's
  connection): drop it, ack it without work, give up on it, or begin an attempt;
- :func:`conclude`, when the run of an attempt ends, with its clips or what stopped it:
  cancel, hand back, or report an outcome;
- :func:`recheck`, before an outcome is published, with the task as it is now: cancel,
  ack (it was decided elsewhere), or report.

A part of a task made across the fleet (``PartSubmitted``) has its own two moments,
:func:`admit_part` and :func:`conclude_part`, counted in the part's own attempts; a part
whose clips are recorded ends in :class:`Complete`, where :func:`complete` says whether
the task is whole.

The worker carries the action out (``worker.py``), as the notifier's ``apply.py``
carries out ``changes.py``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.transcoder.errors import PermanentFailure, ProcessingStopped, TransientFailure
from shared.events import ClipOutput
from shared.lifecycle import TaskStatus

if TYPE_CHECKING:
    from services.transcoder.claim import TaskState


class StopReason(enum.StrEnum):
    """Why a run was stopped from outside (what its ``StopSignal`` is set with)."""

    CANCELED = "canceled"
    DRAINING = "draining"
    LOST_CLAIM = "lost the claim on the task"
    SETTLED = "the task was settled elsewhere"  # a part's task failed, or is processed


@dataclass(frozen=True)
class Drop:
    """Ack a message that can never be processed; logged as an error."""

    why: str


@dataclass(frozen=True)
class Ack:
    """Ack without an outcome: the task needs nothing more from this worker."""

    why: str


@dataclass(frozen=True)
class HandBack:
    """Nack: a later delivery, perhaps on another worker, takes the task."""

    why: str


@dataclass(frozen=True)
class Cancel:
    """The task was canceled or deleted: delete its outputs, publish ``canceled``, ack."""

    attempt: int


@dataclass(frozen=True)
class Report:
    """Publish this outcome, wait until it is recorded, ack. A failed task keeps the
    clips it made (``outputs``, recorded with the failure, and those recorded before);
    its other objects are deleted first."""

    status: TaskStatus
    attempt: int
    outputs: tuple[ClipOutput, ...] = ()
    failure_reason: str | None = None

    @classmethod
    def failed(cls, attempt: int, reason: str) -> Report:
        return cls(TaskStatus.FAILED, attempt, failure_reason=reason)

    @property
    def progress(self) -> int:
        return 100 if self.status is TaskStatus.PROCESSED else 0


@dataclass(frozen=True)
class Begin:
    """Start attempt ``attempt``: announce it, then run the stages."""

    attempt: int


@dataclass(frozen=True)
class FannedOut:
    """The attempt planned the task and handed its ``parts`` to the fleet, each a
    ``PartSubmitted`` of its own: the task's message is done with. ``in_place``: the
    part the attempt made itself (announced like any clip), if it made one, of a plan of
    ``parts_total``."""

    parts: int
    in_place: int | None = None
    parts_total: int = 0


@dataclass(frozen=True)
class Complete:
    """The part's clips are recorded: report the task processed if every part's are
    (:func:`complete`), else ack."""


# How the run of an attempt ended: its clips, its parts handed out, or what ended it.
RunResult = tuple[ClipOutput, ...] | FannedOut | PermanentFailure | TransientFailure | ProcessingStopped


def was_canceled(state: TaskState | None) -> bool:
    """The task is gone, deleted or canceled: nothing may be published for it but that."""
    return state is None or state.deleted or state.status is TaskStatus.CANCELED


def admit(state: TaskState | None, max_attempts: int) -> Drop | Ack | Report | Begin:
    """What to do with a task that arrives in ``state``."""
    if state is None:
        return Drop("no such task")
    if state.settled:
        # A redelivery or a duplicate: the first costs the work, the others one query.
        return Ack(f"task already {'deleted' if state.deleted else state.status}")
    if state.handed_out:
        # Its parts went to the fleet before, and the task came again (a duplicate, or
        # the outbox sweep after a part message was lost): handing out again the parts
        # not recorded is the same attempt, not a new one.
        return Begin(state.attempt)
    if state.attempt >= max_attempts:
        # Every earlier attempt died or was handed back without an outcome.
        return Report.failed(state.attempt, f"processing was interrupted {state.attempt} times; giving up")
    return Begin(state.attempt + 1)


def conclude(run: RunResult, attempt: int, max_attempts: int) -> Cancel | HandBack | Ack | Report:
    """What to do once attempt ``attempt`` ended with ``run``."""
    if isinstance(run, FannedOut):
        return Ack(f"{run.parts} parts handed to the fleet")
    if isinstance(run, ProcessingStopped):
        if run.why == StopReason.CANCELED:
            return Cancel(attempt)
        # Draining, or the claim lost: the task is not this worker's to finish.
        return HandBack(f"stopped ({run.why})")
    if isinstance(run, TransientFailure):
        # Out of in-place tries, or not retried in place at all (ffmpeg could not write:
        # this machine's problem): a later delivery tries again, bounded by the attempt
        # count. The last attempt has no later delivery: it fails here, with this cause.
        if attempt < max_attempts:
            return HandBack(f"transient failure ({run.reason})")
        return Report.failed(attempt, f"{run.reason}; gave up after {attempt} attempts")
    if isinstance(run, PermanentFailure):
        return Report.failed(attempt, run.reason)
    return Report(TaskStatus.PROCESSED, attempt, outputs=run)


def conclude_in_place(
    run: FannedOut, recorded: tuple[ClipOutput, ...], attempt: int, formats: AbstractSet[str]
) -> HandBack | Ack | Report:
    """What the planning worker does once it handed the parts out and made ``run.in_place``
    itself, the notifier having recorded ``recorded``: the task is processed if its part
    was the last one recorded; a part whose clips are not recorded in time hands the task
    back, and its next delivery, finding every part recorded or handing out again those
    not made, decides again."""
    assert run.in_place is not None, "a part made in place"
    if run.in_place not in whole_parts(recorded, formats):
        return HandBack(f"part {run.in_place}'s clips are not recorded yet")
    if not complete(recorded, run.parts_total, formats):
        return Ack(f"{run.parts} parts handed to the fleet, part {run.in_place} made here")
    return Report(
        TaskStatus.PROCESSED,
        attempt,
        outputs=tuple(sorted(recorded, key=lambda clip: (clip.index, clip.format))),
    )


def recheck(latest: TaskState | None, report: Report) -> Cancel | Ack | Report:
    """Whether ``report`` may still be published, the task being in ``latest`` now."""
    if latest is None or was_canceled(latest):
        return Cancel(report.attempt)
    if latest.status.is_final:
        return Ack(f"task already {latest.status}")  # never a second, different outcome
    return report


# --- a part of a task made across the fleet --------------------------------------------------


def admit_part(
    state: TaskState | None, index: int, part_attempt: int, recorded: bool, max_attempts: int
) -> Drop | Ack | Report | Complete | Begin:
    """What to do with part ``index`` arriving with its task in ``state``, the part's
    attempts so far and whether its clips are ``recorded`` already. A failure is reported
    at the task's attempt, naming the part."""
    if state is None:
        return Drop("no such task")
    if state.settled:
        return Ack(f"task already {'deleted' if state.deleted else state.status}")
    if recorded:
        # A redelivery after the part was made: only the task's completion may be left.
        return Complete()
    if part_attempt >= max_attempts:
        return Report.failed(
            state.attempt, f"part {index}: processing was interrupted {part_attempt} times; giving up"
        )
    return Begin(part_attempt + 1)


def conclude_part(
    run: RunResult, index: int, part_attempt: int, task_attempt: int, max_attempts: int
) -> Cancel | HandBack | Ack | Report | Complete:
    """What to do once attempt ``part_attempt`` of part ``index`` ended with ``run``."""
    if isinstance(run, ProcessingStopped):
        if run.why == StopReason.CANCELED:
            return Cancel(task_attempt)
        if run.why == StopReason.SETTLED:
            return Ack("task settled while the part was made")
        return HandBack(f"stopped ({run.why})")
    if isinstance(run, TransientFailure):
        if part_attempt < max_attempts:
            return HandBack(f"transient failure ({run.reason})")
        return Report.failed(
            task_attempt, f"part {index}: {run.reason}; gave up after {part_attempt} attempts"
        )
    if isinstance(run, PermanentFailure):
        return Report.failed(task_attempt, f"part {index}: {run.reason}")
    return Complete()


def whole_parts(recorded: Iterable[ClipOutput], formats: AbstractSet[str]) -> set[int]:
    """The parts ``recorded`` holds in every one of ``formats``."""
    held: dict[int, set[str]] = {}
    for clip in recorded:
        held.setdefault(clip.index, set()).add(clip.format)
    return {index for index, kinds in held.items() if formats <= kinds}


def complete(recorded: tuple[ClipOutput, ...], parts_total: int, formats: AbstractSet[str]) -> bool:
    """Whether the recorded clips hold every part of the plan in every format."""
    return whole_parts(recorded, formats) >= set(range(1, parts_total + 1))
