"""The worker's decision table, without any server: what it does with a task when the
task arrives, when a run ends, and before an outcome is published."""

import pytest

from services.transcoder.claim import TaskState
from services.transcoder.decisions import (
    Ack,
    Begin,
    Cancel,
    Complete,
    Drop,
    FannedOut,
    HandBack,
    Report,
    StopReason,
    admit,
    admit_part,
    complete,
    conclude,
    conclude_in_place,
    conclude_part,
    recheck,
    was_canceled,
)
from services.transcoder.errors import PermanentFailure, ProcessingStopped, TransientFailure
from shared.events import ClipOutput
from shared.lifecycle import TaskStatus

Q, P, DONE, FAILED, CANCELED = (
    TaskStatus.QUEUED,
    TaskStatus.PROCESSING,
    TaskStatus.PROCESSED,
    TaskStatus.FAILED,
    TaskStatus.CANCELED,
)
MAX = 3
CLIPS = (
    ClipOutput(
        index=1,
        uri="gs://clips/tasks/t/part-01.mp4",
        poster_uri="gs://clips/tasks/t/part-01.jpg",
        duration_seconds=22.0,
        size_bytes=1000,
    ),
)


def state(status, attempt=0, deleted=False):
    return TaskState(status, attempt, deleted)


# --- arrival ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "arrived, expected",
    [
        (None, Drop("no such task")),
        # Duplicates and redeliveries of a task that needs nothing more.
        (state(DONE, 1), Ack("task already processed")),
        (state(FAILED, 2), Ack("task already failed")),
        (state(CANCELED, 1), Ack("task already canceled")),
        (state(P, 1, deleted=True), Ack("task already deleted")),
        (state(CANCELED, 1, deleted=True), Ack("task already deleted")),
        # The attempt gate: the next attempt is the one after the last recorded.
        (state(Q, 0), Begin(1)),
        (state(P, 1), Begin(2)),
        (state(P, MAX - 1), Begin(MAX)),
        # Every allowed attempt started and none reported: give up, with that reason.
        (
            state(P, MAX),
            Report(FAILED, MAX, failure_reason=f"processing was interrupted {MAX} times; giving up"),
        ),
        (state(P, MAX + 2), Report.failed(MAX + 2, f"processing was interrupted {MAX + 2} times; giving up")),
        # Its parts were handed out before: handing out again is the same attempt.
        (TaskState(P, 1, False, handed_out=True), Begin(1)),
        (TaskState(P, MAX, False, handed_out=True), Begin(MAX)),
        (TaskState(DONE, 1, False, handed_out=True), Ack("task already processed")),
        (TaskState(P, 1, True, handed_out=True), Ack("task already deleted")),
    ],
)
def test_admit(arrived, expected):
    assert admit(arrived, MAX) == expected


def test_a_task_given_up_on_has_its_outputs_deleted():
    given_up = admit(state(P, MAX), MAX)
    assert isinstance(given_up, Report) and given_up.status is FAILED and given_up.progress == 0


# --- the end of a run ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "run, attempt, expected",
    [
        (CLIPS, 1, Report(DONE, 1, outputs=CLIPS)),
        (CLIPS, MAX, Report(DONE, MAX, outputs=CLIPS)),
        ((), 2, Report(DONE, 2, outputs=())),
        # A permanent failure fails the task whatever the attempt.
        (
            PermanentFailure("the source could not be decoded"),
            1,
            Report.failed(1, "the source could not be decoded"),
        ),
        (PermanentFailure("too long"), MAX, Report.failed(MAX, "too long")),
        # A transient one is handed back, except on the last attempt, which fails with it.
        (TransientFailure("storing a clip failed"), 1, HandBack("transient failure (storing a clip failed)")),
        (TransientFailure("disk full"), MAX - 1, HandBack("transient failure (disk full)")),
        (
            TransientFailure("storing a clip failed (gave up after 3 tries)"),
            MAX,
            Report.failed(
                MAX, f"storing a clip failed (gave up after 3 tries); gave up after {MAX} attempts"
            ),
        ),
        # Stopped from outside.
        (ProcessingStopped(StopReason.CANCELED), 2, Cancel(2)),
        (ProcessingStopped(StopReason.CANCELED), MAX, Cancel(MAX)),
        (ProcessingStopped(StopReason.DRAINING), 1, HandBack("stopped (draining)")),
        (ProcessingStopped(StopReason.DRAINING), MAX, HandBack("stopped (draining)")),
        (ProcessingStopped(StopReason.LOST_CLAIM), 1, HandBack("stopped (lost the claim on the task)")),
    ],
)
def test_conclude(run, attempt, expected):
    assert conclude(run, attempt, MAX) == expected


def test_outcomes_carry_their_progress():
    assert conclude(CLIPS, 1, MAX).progress == 100
    assert conclude(PermanentFailure("x"), 1, MAX).progress == 0


# --- before the outcome is published --------------------------------------------------------

PROCESSED = Report(DONE, 2, outputs=CLIPS)
FAILURE = Report.failed(2, "too long")


@pytest.mark.parametrize("report", [PROCESSED, FAILURE])
@pytest.mark.parametrize(
    "latest, expected",
    [
        (state(P, 2), "report"),
        (state(P, 3), "report"),  # a newer attempt started elsewhere: the notifier sorts it out
        (None, Cancel(2)),
        (state(P, 2, deleted=True), Cancel(2)),
        (state(CANCELED, 2), Cancel(2)),
        (state(DONE, 2), Ack("task already processed")),  # decided elsewhere: no second outcome
        (state(FAILED, 3), Ack("task already failed")),
    ],
)
def test_recheck(report, latest, expected):
    assert recheck(latest, report) == (report if expected == "report" else expected)


@pytest.mark.parametrize(
    "latest, canceled",
    [
        (None, True),
        (state(CANCELED, 1), True),
        (state(P, 1, deleted=True), True),
        (state(DONE, 1, deleted=True), True),
        (state(P, 1), False),
        (state(Q, 0), False),
        (state(DONE, 1), False),
        (state(FAILED, 1), False),
    ],
)
def test_was_canceled(latest, canceled):
    assert was_canceled(latest) is canceled


def test_stop_reasons_are_the_words_logged_and_compared():
    assert [str(reason) for reason in StopReason] == [
        "canceled",
        "draining",
        "lost the claim on the task",
        "the task was settled elsewhere",
    ]
    assert ProcessingStopped(StopReason.CANCELED).why == "canceled"


def test_a_task_whose_parts_went_to_the_fleet_is_acked():
    assert conclude(FannedOut(3), 1, MAX) == Ack("3 parts handed to the fleet")


# --- a part of a task made across the fleet --------------------------------------------------


@pytest.mark.parametrize(
    "arrived, part_attempt, recorded, expected",
    [
        (None, 0, False, Drop("no such task")),
        (state(DONE, 1), 0, True, Ack("task already processed")),
        (state(FAILED, 1), 1, False, Ack("task already failed")),
        (state(CANCELED, 1), 0, False, Ack("task already canceled")),
        (state(P, 1, deleted=True), 0, False, Ack("task already deleted")),
        # Made already: only the task's completion may be left to do.
        (state(P, 1), 1, True, Complete()),
        (state(P, 1), MAX, True, Complete()),
        # A part counts its own attempts; the task's is its planning worker's.
        (state(P, 1), 0, False, Begin(1)),
        (state(P, 2), 2, False, Begin(3)),
        (
            state(P, 2),
            MAX,
            False,
            Report.failed(2, f"part 4: processing was interrupted {MAX} times; giving up"),
        ),
    ],
)
def test_part_arrival(arrived, part_attempt, recorded, expected):
    assert admit_part(arrived, 4, part_attempt, recorded, MAX) == expected


@pytest.mark.parametrize(
    "run, part_attempt, expected",
    [
        (CLIPS, 1, Complete()),
        (ProcessingStopped(StopReason.CANCELED), 1, Cancel(2)),
        (ProcessingStopped(StopReason.SETTLED), 1, Ack("task settled while the part was made")),
        (ProcessingStopped(StopReason.DRAINING), 1, HandBack("stopped (draining)")),
        (TransientFailure("storage is down"), 1, HandBack("transient failure (storage is down)")),
        (
            TransientFailure("storage is down"),
            MAX,
            Report.failed(2, f"part 4: storage is down; gave up after {MAX} attempts"),
        ),
        (PermanentFailure("the source is damaged"), 1, Report.failed(2, "part 4: the source is damaged")),
    ],
)
def test_part_end(run, part_attempt, expected):
    assert conclude_part(run, 4, part_attempt, 2, MAX) == expected


def _clip(index, clip_format="16:9"):
    return ClipOutput(
        index=index, format=clip_format, uri=f"gs://c/{index}", duration_seconds=4, size_bytes=1
    )


@pytest.mark.parametrize(
    "recorded, formats, whole",
    [
        ((_clip(1), _clip(2), _clip(3)), {"16:9"}, True),
        ((_clip(3), _clip(1), _clip(2), _clip(4)), {"16:9"}, True),
        ((_clip(1), _clip(3)), {"16:9"}, False),
        ((), {"16:9"}, False),
        ((_clip(1), _clip(2), _clip(3), _clip(1, "9:16"), _clip(2, "9:16")), {"16:9", "9:16"}, False),
        (
            (_clip(1), _clip(2), _clip(3), _clip(1, "9:16"), _clip(2, "9:16"), _clip(3, "9:16")),
            {"16:9", "9:16"},
            True,
        ),
    ],
)
def test_a_task_is_complete_when_every_part_is_recorded_in_every_format(recorded, formats, whole):
    assert complete(recorded, 3, frozenset(formats)) is whole


IN_PLACE = FannedOut(2, in_place=1, parts_total=3)


@pytest.mark.parametrize(
    "recorded, formats, expected",
    [
        # Its own part not recorded in time: the task comes again and decides again.
        ((), {"16:9"}, HandBack("part 1's clips are not recorded yet")),
        ((_clip(2), _clip(3)), {"16:9"}, HandBack("part 1's clips are not recorded yet")),
        ((_clip(1), _clip(2), _clip(3)), {"16:9", "9:16"}, HandBack("part 1's clips are not recorded yet")),
        # Others still to be made: their workers finish the task.
        ((_clip(1),), {"16:9"}, Ack("2 parts handed to the fleet, part 1 made here")),
        ((_clip(1), _clip(3)), {"16:9"}, Ack("2 parts handed to the fleet, part 1 made here")),
        # Its own part was the last one recorded: the task is processed, every clip named.
        (
            (_clip(3), _clip(1), _clip(2)),
            {"16:9"},
            Report(DONE, 2, outputs=(_clip(1), _clip(2), _clip(3))),
        ),
    ],
)
def test_the_planning_worker_that_made_the_first_part_completes_the_task_if_it_was_the_last(
    recorded, formats, expected
):
    assert conclude_in_place(IN_PLACE, recorded, 2, frozenset(formats)) == expected
