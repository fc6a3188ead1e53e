"""A task's parts made across the fleet (``FANOUT_MIN_PARTS``), with real workers, the
Pub/Sub and Cloud Storage emulators, PostgreSQL and ffmpeg: the planning worker stores
each part's segment and hands the parts out, any worker makes one, and the one that
records the last reports the task."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.events import ClipSpec
from shared.lifecycle import TaskStatus
from shared.storage import parse_gs_uri, storage_client
from tests.support.db import cancel_task, part_attempts, task_row
from tests.support.media import grey_levels, make_level_source, make_video
from tests.support.worker import (
    FlakyStorageProxy,
    clip_objects,
    ffmpeg_under,
    gone,
    insert_task,
    mark_interrupted,
    submit,
    upload_of,
    upload_source,
    wait_for,
    wait_status,
    worker_thread,
)

FPS = 30
GOP = 25  # frames between keyframes: parts 2 and 3 start between two
# Three parts of 2, 2 and 2 s, each clip with a card of one second at each end.
SPEC = ClipSpec(width=320, height=180, max_part_seconds=2, preset="ultrafast", crf=10)
CARD_FRAMES = FPS
# The same parts, slow enough that the second worker takes a part while the planning
# worker makes the first (seconds per part, where handing a part out takes well under one).
SPEC_SLOWER = SPEC.model_copy(update={"width": 1280, "height": 720, "preset": "slow"})
# Slow enough that both workers' ffmpeg are seen running (tens of seconds per part).
SLOW = ClipSpec(width=1280, height=720, max_part_seconds=10, preset="slow", crf=18)


@pytest.fixture
def tsettings(settings):
    return settings.model_copy(
        update={
            "transcoder_lease_extension_seconds": 10,
            "retry_initial_seconds": 0.2,
            "transcoder_concurrency": 1,
            "fanout_min_parts": 2,
        }
    )


@pytest.fixture(scope="module")
def level_source(tmp_path_factory) -> Path:
    return make_level_source(tmp_path_factory.mktemp("fanout") / "levels.mp4", seconds=6, fps=FPS, gop=GOP)


def _download(tsettings, uri: str, folder: Path) -> Path:
    bucket, name = parse_gs_uri(uri)
    path = folder / Path(name).name
    storage_client().bucket(bucket).blob(name).download_to_filename(str(path))
    return path


def _clip_names(task_id, parts: int) -> list[str]:
    return sorted(
        f"tasks/{task_id}/part-{index:02d}{suffix}"
        for index in range(1, parts + 1)
        for suffix in (".mp4", ".jpg", "-preview.mp4")
    )


def test_two_workers_make_a_tasks_parts_and_the_clips_join_frame_exactly(
    tsettings, engine, notifier, level_source, tmp_path
):
    task = insert_task(engine, upload_source(tsettings, level_source), SPEC_SLOWER)
    with (
        worker_thread(tsettings, engine, worker_id="worker-a"),
        worker_thread(tsettings, engine, worker_id="worker-b"),
    ):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
    assert (row["status"], row["attempt"], row["clips_total"]) == ("processed", 1, 3), row
    assert notifier.starts(task.task_id) == [1]  # planned once
    # The planning worker made part 1 from the source it held; the fleet made the others.
    assert notifier.handed_out(task.task_id) == [(1, True), (2, False), (3, False)]
    starts = notifier.part_starts(task.task_id)
    assert sorted((part, attempt) for part, attempt, _ in starts) == [(1, 1), (2, 1), (3, 1)]
    assert {worker for _, _, worker in starts} == {"worker-a", "worker-b"}
    assert part_attempts(engine, task.task_id) == {1: 1, 2: 1, 3: 1}
    (processed,) = notifier.outcomes(task.task_id)
    assert [clip.index for clip in processed.outputs] == [1, 2, 3]
    # The parts' segments went with the outcome: only the clips are left.
    assert clip_objects(tsettings, task.task_id) == _clip_names(task.task_id, 3)
    # Cards removed, the clips hold every frame of the source once, in order.
    content: list[int] = []
    for clip in processed.outputs:
        content += grey_levels(_download(tsettings, clip.uri, tmp_path))[CARD_FRAMES:-CARD_FRAMES]
    expected = grey_levels(level_source)
    assert len(content) == len(expected) == 6 * FPS
    assert max(abs(a - b) for a, b in zip(content, expected)) <= 2


def test_a_task_that_comes_again_after_its_parts_went_out_is_not_a_new_attempt(
    tsettings, engine, notifier, level_source
):
    task = insert_task(engine, upload_source(tsettings, level_source), SPEC)
    with worker_thread(tsettings, engine):
        # A duplicate, as the outbox sweep sends when a part message is lost: the second
        # copy comes after the first handed the parts out.
        submit(tsettings, task)
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
        wait_for(lambda: len(notifier.starts(task.task_id)) == 2, 60, "the second copy to be handled")
    assert (row["status"], row["attempt"]) == ("processed", 1), row
    assert notifier.starts(task.task_id) == [1, 1]  # both copies at attempt 1
    # Each part was made once: the copies of a part made already were acked.
    assert sorted(part for part, _, _ in notifier.part_starts(task.task_id)) == [1, 2, 3]
    assert part_attempts(engine, task.task_id) == {1: 1, 2: 1, 3: 1}
    assert clip_objects(tsettings, task.task_id) == _clip_names(task.task_id, 3)


def _segment_reads_of(part: int):
    """Reads of part ``part``'s segment (its metadata is read first)."""
    name = f"segments%2Fpart-{part:02d}.mkv"
    return lambda method, path, body: method == "GET" and name in path


def test_a_part_that_fails_transiently_is_retried_alone(
    tsettings, engine, notifier, level_source, storage_emulator_host
):
    once = tsettings.model_copy(update={"retry_tries": 1})  # the failure hands the part back
    task = insert_task(engine, upload_source(tsettings, level_source), SPEC)
    with (
        FlakyStorageProxy(storage_emulator_host, 1, refuse=_segment_reads_of(2)) as proxy,
        worker_thread(once, engine, storage_client=proxy.client()),
    ):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
    assert proxy.failed == 1
    assert (row["status"], row["attempt"]) == ("processed", 1), row
    assert part_attempts(engine, task.task_id) == {1: 1, 2: 2, 3: 1}
    assert sorted((part, attempt) for part, attempt, _ in notifier.part_starts(task.task_id)) == [
        (1, 1),
        (2, 1),
        (2, 2),
        (3, 1),
    ]
    assert clip_objects(tsettings, task.task_id) == _clip_names(task.task_id, 3)


def test_the_first_part_failing_transiently_on_the_tasks_last_attempt_goes_to_the_fleet(
    tsettings, engine, notifier, level_source, storage_emulator_host
):
    # The task's last attempt (one earlier run died); the planning worker's own run of
    # part 1 is the part's first attempt, and a transient failure of it leaves the part
    # its second, on the fleet, instead of failing the task.
    last = tsettings.model_copy(update={"retry_tries": 1, "max_attempts": 2})
    task = insert_task(engine, upload_source(tsettings, level_source), SPEC)
    mark_interrupted(engine, task.task_id, 1)
    with (
        FlakyStorageProxy(storage_emulator_host, 1, refuse=upload_of("part-01.mp4")) as proxy,
        worker_thread(last, engine, storage_client=proxy.client()),
    ):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
    assert proxy.failed == 1
    assert (row["status"], row["attempt"]) == ("processed", 2), row
    # Part 1 made here first, then handed out as any part.
    assert notifier.handed_out(task.task_id) == [(1, False), (1, True), (2, False), (3, False)]
    assert sorted((part, attempt) for part, attempt, _ in notifier.part_starts(task.task_id)) == [
        (1, 1),
        (1, 2),
        (2, 1),
        (3, 1),
    ]
    assert part_attempts(engine, task.task_id) == {1: 2, 2: 1, 3: 1}
    assert clip_objects(tsettings, task.task_id) == _clip_names(task.task_id, 3)


def test_a_part_that_fails_for_good_fails_the_task_naming_it(
    tsettings, engine, notifier, level_source, storage_emulator_host
):
    task = insert_task(engine, upload_source(tsettings, level_source), SPEC)
    with (
        FlakyStorageProxy(storage_emulator_host, 100, refuse=_segment_reads_of(3), status=403) as proxy,
        worker_thread(tsettings, engine, storage_client=proxy.client()),
    ):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
    assert row["status"] == "failed", row
    assert row["failure_reason"] == "part 3: the part's segment cannot be read"
    # The parts made before it are recorded and stay the task's; nothing else is left.
    made = [index for index, _ in row["clips"]]
    assert 3 not in made
    assert clip_objects(tsettings, task.task_id) == sorted(
        name for index in made for name in _clip_names(task.task_id, 3) if f"part-{index:02d}" in name
    )
    (outcome,) = notifier.outcomes(task.task_id)
    assert outcome.status is TaskStatus.FAILED


def test_cancel_stops_every_parts_ffmpeg_and_leaves_no_object(tsettings, engine, notifier, tmp_path):
    source = make_video(tmp_path / "long.mp4", width=640, height=360, seconds=30)
    task = insert_task(engine, upload_source(tsettings, source), SLOW)
    with worker_thread(tsettings, engine), worker_thread(tsettings, engine):
        submit(tsettings, task)
        # The planning worker makes part 1 while the other makes part 2 (the segments'
        # stream copies are not a part's ffmpeg).
        running = wait_for(
            lambda: (
                len(found := ffmpeg_under(os.getpid(), encodes_only=True)) == 2
                and len(notifier.part_starts(task.task_id)) == 2
                and found
            ),
            120,
            "two parts' ffmpeg",
        )
        cancel_task(engine, task.task_id)
        wait_for(lambda: all(gone(ffmpeg) for ffmpeg in running), 30, "every part's ffmpeg to stop")
        wait_for(
            lambda: [s[0] for s in notifier.statuses(task.task_id)].count("canceled") == 2,
            30,
            "both part workers to report the cancellation",
        )
    assert clip_objects(tsettings, task.task_id) == []
    assert task_row(engine, task.task_id)["status"] == "canceled"
    assert notifier.outcomes(task.task_id) == []
