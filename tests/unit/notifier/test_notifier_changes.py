"""The notifier's ordering rules, without a database: only news moves a task."""

import uuid
from datetime import UTC, datetime

import pytest

from services.notifier.changes import (
    MAX_FAILURE_REASON_CHARS,
    TaskState,
    check_event,
    orphaned_objects,
    own_outputs,
    plan_change,
)
from shared.events import ClipOutput, MalformedEvent, TaskStatusChanged
from shared.lifecycle import TaskStatus

Q, P, DONE, FAILED, CANCELED = (
    TaskStatus.QUEUED,
    TaskStatus.PROCESSING,
    TaskStatus.PROCESSED,
    TaskStatus.FAILED,
    TaskStatus.CANCELED,
)


def clip(index, bucket="clips", poster=False):
    return ClipOutput(
        index=index,
        uri=f"gs://{bucket}/t/part-{index:02d}.mp4",
        poster_uri=f"gs://{bucket}/t/part-{index:02d}.jpg" if poster else None,
        duration_seconds=22.0,
        size_bytes=1000,
    )


def event(status, attempt=1, progress=0, **fields):
    return TaskStatusChanged(
        task_id=uuid.uuid4(), status=status, attempt=attempt, progress=progress, **fields
    )


@pytest.mark.parametrize(
    "state, new, expected_status",
    [
        (TaskState(Q, 0, 0), event(P, attempt=1), P),
        (TaskState(P, 10, 1), event(P, attempt=1, progress=40), P),
        (TaskState(P, 80, 1), event(P, attempt=2, progress=0), P),  # a new attempt is news
        (TaskState(Q, 0, 0), event(DONE, outputs=(clip(0),)), DONE),  # skipped processing
        (TaskState(P, 50, 2), event(DONE, attempt=1, outputs=(clip(0),)), DONE),
        (TaskState(P, 50, 1), event(FAILED, attempt=1, failure_reason="x"), FAILED),
        (TaskState(P, 50, 1), event(CANCELED, attempt=0), CANCELED),
    ],
)
def test_news_moves_the_task(state, new, expected_status):
    change = plan_change(state, new)
    assert change is not None and change.status is expected_status
    assert change.status_changed == (expected_status != state.status)


@pytest.mark.parametrize(
    "state, new",
    [
        (TaskState(P, 40, 1), event(Q, attempt=1)),  # backwards
        (TaskState(P, 40, 1), event(P, attempt=1, progress=40)),  # nothing new
        (TaskState(P, 40, 1), event(P, attempt=1, progress=30)),  # late progress
        (TaskState(P, 10, 2), event(P, attempt=1, progress=90)),  # an old attempt's progress
        (TaskState(P, 10, 2), event(FAILED, attempt=1, failure_reason="x")),  # superseded
        (TaskState(Q, 0, 0), event(Q, attempt=0)),
        (TaskState(DONE, 100, 1), event(P, attempt=2, progress=5)),  # final is final
        (TaskState(DONE, 100, 1), event(DONE, attempt=2, outputs=(clip(0),))),
        (TaskState(FAILED, 30, 3), event(DONE, attempt=3, outputs=(clip(0),))),
        (TaskState(CANCELED, 30, 1), event(DONE, attempt=1, outputs=(clip(0),))),
        (TaskState(P, 30, 1, deleted=True), event(P, attempt=1, progress=60)),
    ],
)
def test_stale_events_change_nothing(state, new):
    assert plan_change(state, new) is None


def test_progress_never_falls_even_when_a_new_attempt_starts_over():
    change = plan_change(TaskState(P, 80, 1), event(P, attempt=2, progress=5))
    assert (change.progress, change.attempt) == (80, 2)
    failed = plan_change(TaskState(P, 70, 2), event(FAILED, attempt=2, progress=0))
    assert failed.progress == 70


def test_processed_means_full_progress_and_failed_keeps_a_bounded_reason():
    assert plan_change(TaskState(P, 30, 1), event(DONE, progress=90)).progress == 100
    long = plan_change(TaskState(P, 0, 1), event(FAILED, failure_reason="x" * 10_000))
    assert len(long.failure_reason) == MAX_FAILURE_REASON_CHARS
    assert plan_change(TaskState(P, 0, 1), event(FAILED)).failure_reason


@pytest.mark.parametrize(
    "bad, reason",
    [
        (event(DONE, outputs=(clip(0), clip(0))), "repeat"),
        (
            event(
                DONE, outputs=(ClipOutput(index=0, uri="https://x/y.mp4", duration_seconds=1, size_bytes=1),)
            ),
            "gs://",
        ),
        (
            event(
                DONE, outputs=(ClipOutput(index=-1, uri="gs://c/y.mp4", duration_seconds=1, size_bytes=1),)
            ),
            "out of range",
        ),
        (
            event(
                DONE, outputs=(ClipOutput(index=0, uri="gs://c/y.mp4", duration_seconds=1, size_bytes=2**63),)
            ),
            "out of range",
        ),
        (
            event(
                DONE,
                outputs=(
                    ClipOutput(index=0, uri="gs://c/y.mp4", duration_seconds=float("inf"), size_bytes=1),
                ),
            ),
            "out of range",
        ),
        (
            event(
                DONE,
                outputs=(
                    ClipOutput(index=0, uri="gs://c/y.mp4", duration_seconds=float("nan"), size_bytes=1),
                ),
            ),
            "out of range",
        ),
        (event(P, attempt=2**31), "attempt"),
        (event(P, attempt=-1), "attempt"),
        (event(Q, outputs=(clip(0),)), "names outputs"),
        (event(CANCELED, outputs=(clip(0),)), "names outputs"),
        (event(P, clips_total=2**31), "clips_total"),
        (event(P, occurred_at=datetime(2026, 1, 1)), "time zone"),
    ],
)
def test_events_that_can_never_apply_are_malformed(bad, reason):
    with pytest.raises(MalformedEvent, match=reason):
        check_event(bad)


def test_a_well_formed_event_passes_the_check():
    check_event(event(DONE, outputs=(clip(0, poster=True), clip(1)), occurred_at=datetime.now(UTC)))
    check_event(event(P, outputs=(clip(3),), clips_total=9))  # a part's clips, as they are made
    check_event(event(FAILED, outputs=(clip(0),), failure_reason="x"))  # kept despite the failure


@pytest.mark.parametrize(
    "state, new",
    [
        # Clips just made are news whatever the progress says, from any attempt.
        (TaskState(P, 40, 1), event(P, attempt=1, progress=40, outputs=(clip(2),))),
        (TaskState(P, 40, 2), event(P, attempt=1, progress=10, outputs=(clip(2),))),
        # The first count of the parts is news; the same count again is not.
        (TaskState(P, 0, 1), event(P, attempt=1, progress=0, clips_total=9)),
    ],
)
def test_clips_and_the_first_count_of_parts_are_news_while_processing(state, new):
    change = plan_change(state, new)
    assert change is not None and change.status is P and not change.status_changed
    assert change.attempt == max(state.attempt, new.attempt)
    assert change.progress == max(state.progress, new.progress)
    assert change.clips_total == new.clips_total


def test_a_count_of_parts_already_known_is_not_news():
    assert plan_change(TaskState(P, 0, 1, clips_total=9), event(P, attempt=1, clips_total=9)) is None
    # A final task takes no more clips: they are not recorded.
    assert plan_change(TaskState(FAILED, 50, 1), event(P, attempt=1, outputs=(clip(0),))) is None


def test_a_late_clip_of_a_task_no_longer_processing_is_an_orphan_unless_recorded():
    late = event(P, progress=30, outputs=(clip(1, poster=True),))
    named = ["gs://clips/t/part-01.mp4", "gs://clips/t/part-01.jpg"]
    assert orphaned_objects(TaskState(CANCELED, 10, 1), late, set(named)) == named
    assert orphaned_objects(TaskState(FAILED, 30, 1), late, set()) == named
    assert orphaned_objects(TaskState(DONE, 100, 1), late, set(named)) == []


def test_a_late_processed_event_orphans_only_objects_no_clip_holds():
    late = event(DONE, outputs=(clip(0, poster=True), clip(1)))
    named = ["gs://clips/t/part-00.mp4", "gs://clips/t/part-00.jpg", "gs://clips/t/part-01.mp4"]
    assert orphaned_objects(TaskState(CANCELED, 10, 1), late, set()) == named
    assert orphaned_objects(TaskState(DONE, 100, 1, deleted=True), late, set(named)) == named
    # Another run wrote the same names the recorded clips use: those are live.
    assert orphaned_objects(TaskState(DONE, 100, 1), late, {named[0], named[1]}) == [named[2]]
    assert orphaned_objects(TaskState(DONE, 100, 1), event(P, progress=5), set()) == []


def test_only_outputs_in_the_tasks_own_folder_are_kept():
    task_id = uuid.uuid4()
    other = uuid.uuid4()
    own = f"gs://clips/tasks/{task_id}/part-01"
    outputs = (
        ClipOutput(index=1, uri=f"{own}.mp4", poster_uri=f"{own}.jpg", duration_seconds=20, size_bytes=1),
        ClipOutput(
            index=2,
            uri=f"gs://clips/tasks/{task_id}/part-02.mp4",
            poster_uri=f"gs://uploads/uploads/{other}/source",
            duration_seconds=20,
            size_bytes=1,
        ),
        ClipOutput(
            index=3,
            uri=f"gs://clips/tasks/{other}/part-01.mp4",
            poster_uri=f"gs://clips/tasks/{other}/part-01.jpg",
            duration_seconds=20,
            size_bytes=1,
        ),
        ClipOutput(index=4, uri=f"gs://uploads/uploads/{other}/source", duration_seconds=20, size_bytes=1),
    )
    done = TaskStatusChanged(task_id=task_id, status=DONE, attempt=1, progress=100, outputs=outputs)

    kept, refused = own_outputs(done, "clips")

    assert kept == (outputs[0], outputs[1].model_copy(update={"poster_uri": None}))
    assert refused == [
        f"gs://uploads/uploads/{other}/source",
        f"gs://clips/tasks/{other}/part-01.mp4",
        f"gs://clips/tasks/{other}/part-01.jpg",
        f"gs://uploads/uploads/{other}/source",
    ]
    assert own_outputs(done, "another-bucket") == (
        (),
        [uri for c in outputs for uri in (c.uri, c.poster_uri) if uri],
    )


def test_a_part_may_come_in_several_formats_but_each_once():
    def in_format(clip_format):
        return ClipOutput(
            index=1,
            format=clip_format,
            uri=f"gs://clips/t/{clip_format}.mp4",
            duration_seconds=1,
            size_bytes=1,
        )

    check_event(event(DONE, outputs=(in_format("16:9"), in_format("9:16"), in_format("1:1"))))
    with pytest.raises(MalformedEvent, match="repeat"):
        check_event(event(DONE, outputs=(in_format("9:16"), in_format("9:16"))))


def test_previews_outside_the_tasks_folder_are_dropped_and_previews_count_as_objects():
    task_id, other = uuid.uuid4(), uuid.uuid4()
    own = f"gs://clips/tasks/{task_id}/part-01-9x16"
    inside = ClipOutput(
        index=1,
        format="9:16",
        uri=f"{own}.mp4",
        poster_uri=f"{own}.jpg",
        preview_uri=f"{own}-preview.mp4",
        duration_seconds=20,
        size_bytes=1,
    )
    foreign_preview = inside.model_copy(
        update={"index": 2, "preview_uri": f"gs://clips/tasks/{other}/part-01-preview.mp4"}
    )
    outside = inside.model_copy(update={"index": 3, "uri": f"gs://clips/tasks/{other}/part-01.mp4"})
    done = TaskStatusChanged(
        task_id=task_id, status=DONE, attempt=1, progress=100, outputs=(inside, foreign_preview, outside)
    )

    kept, refused = own_outputs(done, "clips")

    assert kept == (inside, foreign_preview.model_copy(update={"preview_uri": None}))
    assert refused == [
        f"gs://clips/tasks/{other}/part-01-preview.mp4",
        f"gs://clips/tasks/{other}/part-01.mp4",
        f"{own}.jpg",
        f"{own}-preview.mp4",
    ]
    late = TaskStatusChanged(task_id=task_id, status=DONE, attempt=1, progress=100, outputs=(inside,))
    assert orphaned_objects(TaskState(CANCELED, 10, 1), late, set()) == [
        f"{own}.mp4",
        f"{own}.jpg",
        f"{own}-preview.mp4",
    ]
