"""The worker against the real Pub/Sub emulator, Cloud Storage emulator and PostgreSQL,
with the notifier's own code applying the worker's events to the database."""

from __future__ import annotations

import logging
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil
import pytest

from shared.db import create_engine
from shared.events import ClipSpec
from shared.lifecycle import TaskStatus
from shared.storage import storage_client
from tests.support.db import cancel_task, task_row
from tests.support.media import make_video
from tests.support.worker import (
    FlakyStorageProxy,
    clip_objects,
    ffmpeg_under,
    gone,
    insert_task,
    listings_of,
    mark_interrupted,
    record_clip,
    store_partial_outputs,
    submit,
    upload_source,
    wait_for,
    wait_status,
    worker_process,
    worker_thread,
)

SMALL = ClipSpec(width=320, height=180)
# Slow enough that a test reliably acts while ffmpeg runs (several seconds for
# `long_source`, many times the 1 s grace period and the 1 s cancel poll).
SLOW = ClipSpec(width=1280, height=720, preset="slow", crf=18)


@pytest.fixture
def tsettings(settings):
    return settings.model_copy(
        update={
            "transcoder_lease_extension_seconds": 10,  # the minimum: redelivery in ~10 s
            "retry_initial_seconds": 0.2,
            "transcoder_concurrency": 1,
        }
    )


@pytest.fixture(scope="module")
def short_source(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("short") / "short.mp4", seconds=2)


@pytest.fixture(scope="module")
def long_source(tmp_path_factory):
    # One part (shorter than max_part_seconds): each SLOW run of it is the one clip, part-01.
    return make_video(tmp_path_factory.mktemp("long") / "long.mp4", width=640, height=360, seconds=6)


def ffmpeg_of_this_process() -> list[psutil.Process]:
    return ffmpeg_under(os.getpid())


def test_an_upload_becomes_clips_with_progress_and_outputs(tsettings, engine, notifier, short_source):
    task = insert_task(engine, upload_source(tsettings, short_source))
    with worker_thread(tsettings, engine):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED)
    assert (row["attempt"], row["progress"]) == (1, 100)
    events = notifier.for_task(task.task_id)
    assert [str(e.status) for e in events][0] == "processing" and events[0].progress == 0
    (processed,) = notifier.outcomes(task.task_id)
    assert processed.status is TaskStatus.PROCESSED and processed.worker_id
    (clip,) = processed.outputs
    assert clip.uri == f"gs://{tsettings.clips_bucket}/tasks/{task.task_id}/part-01.mp4"
    assert clip.poster_uri == f"gs://{tsettings.clips_bucket}/tasks/{task.task_id}/part-01.jpg"
    assert clip.preview_uri == f"gs://{tsettings.clips_bucket}/tasks/{task.task_id}/part-01-preview.mp4"
    assert clip.format == "16:9"
    assert abs(clip.duration_seconds - 4.0) <= 1 / 30 and clip.size_bytes > 0
    assert clip_objects(tsettings, task.task_id) == [
        f"tasks/{task.task_id}/part-01-preview.mp4",
        f"tasks/{task.task_id}/part-01.jpg",
        f"tasks/{task.task_id}/part-01.mp4",
    ]
    assert row["clips"] == [(1, clip.uri)]


# Three parts of 2, 2 and 1 s from a 5 s source: enough to see clips come one by one.
PARTS = ClipSpec(width=320, height=180, max_part_seconds=2, preset="ultrafast")


@pytest.fixture(scope="module")
def three_part_source(tmp_path_factory):
    return make_video(tmp_path_factory.mktemp("parts") / "five.mp4", seconds=5)


def test_each_part_is_recorded_and_announced_as_soon_as_it_is_made(
    tsettings, engine, notifier, three_part_source
):
    task = insert_task(engine, upload_source(tsettings, three_part_source), PARTS)
    with worker_thread(tsettings, engine):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED)
    events = notifier.for_task(task.task_id)
    kinds = [(str(e.status), e.clips_total, tuple(o.index for o in e.outputs)) for e in events]
    announced = [indexes for status, _, indexes in kinds if status == "processing" and indexes]
    # One event per part, as it is made (the parts go out in the order Pub/Sub delivers them).
    assert sorted(announced) == [(1,), (2,), (3,)], kinds
    # The count of parts comes before the first clip; the outcome names every clip.
    counted = next(i for i, (_, total, _) in enumerate(kinds) if total == 3)
    assert counted < next(i for i, (_, _, indexes) in enumerate(kinds) if indexes), kinds
    assert kinds[-1] == ("processed", None, (1, 2, 3))
    assert row["clips_total"] == 3 and [index for index, _ in row["clips"]] == [1, 2, 3]
    # A clip's progress is the share of the task made when it was announced.
    progress = [e.progress for e in events if e.outputs and e.status is TaskStatus.PROCESSING]
    assert progress == sorted(progress) and 0 < progress[0] < progress[-1] < 100, progress


def test_a_later_attempt_makes_only_the_parts_no_earlier_one_recorded(
    tsettings, engine, notifier, three_part_source
):
    task = insert_task(engine, upload_source(tsettings, three_part_source), PARTS)
    # An earlier attempt made part 1, whose clip the notifier recorded, and then died.
    mark_interrupted(engine, task.task_id, 1)
    recorded = record_clip(tsettings, engine, task.task_id, 1, b"made by attempt 1")
    with worker_thread(tsettings, engine):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
    assert (row["status"], row["attempt"]) == ("processed", 2), row
    # Attempt 2 handed out the two parts not recorded (each its own first attempt).
    assert sorted(part for part, _, _ in notifier.part_starts(task.task_id)) == [2, 3]
    second = [e for e in notifier.for_task(task.task_id) if e.outputs]
    indexes = [tuple(o.index for o in e.outputs) for e in second]
    assert sorted(indexes[:-1]) == [(2,), (3,)] and indexes[-1] == (1, 2, 3), indexes
    assert second[-1].outputs[0] == recorded
    assert (
        storage_client()
        .bucket(tsettings.clips_bucket)
        .blob(f"tasks/{task.task_id}/part-01.mp4")
        .download_as_bytes()
        == b"made by attempt 1"
    )


def test_a_failed_task_keeps_the_clips_made_before_its_failure(tsettings, engine, notifier, tmp_path):
    whole = make_video(tmp_path / "whole.mp4", seconds=6, extra=("-movflags", "+faststart"))
    source = tmp_path / "cut.mp4"
    # The header still promises 6 s; the data stops after about 3 s: part 2 comes out short.
    source.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    task = insert_task(engine, upload_source(tsettings, source), PARTS)
    with worker_thread(tsettings, engine):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.FAILED, TaskStatus.PROCESSED)
    assert row["status"] == "failed" and "damaged: part 2" in row["failure_reason"], row
    assert row["clips"] == [(1, f"gs://{tsettings.clips_bucket}/tasks/{task.task_id}/part-01.mp4")]
    assert clip_objects(tsettings, task.task_id) == [
        f"tasks/{task.task_id}/part-01-preview.mp4",
        f"tasks/{task.task_id}/part-01.jpg",
        f"tasks/{task.task_id}/part-01.mp4",
    ]
    (failed,) = notifier.outcomes(task.task_id)
    assert [o.index for o in failed.outputs] == [1]


def test_a_duplicate_of_a_finished_task_is_acked_without_work(
    tsettings, engine, notifier, short_source, caplog
):
    caplog.set_level(logging.INFO, logger="services.transcoder")
    task = insert_task(engine, upload_source(tsettings, short_source), SMALL)
    with worker_thread(tsettings, engine):
        submit(tsettings, task)
        wait_status(engine, task.task_id, TaskStatus.PROCESSED)
        submit(tsettings, task)  # the same event again: a redelivery or a duplicate publish
        wait_for(
            lambda: any(
                "task already processed; acking its message" in r.getMessage()
                and getattr(r, "task_id", None) == str(task.task_id)
                for r in caplog.records
            ),
            60,
            "the duplicate to be acked",
        )
    assert notifier.starts(task.task_id) == [1]
    assert len(notifier.outcomes(task.task_id)) == 1


def test_two_workers_given_the_same_task_publish_one_outcome(tsettings, engine, notifier, short_source):
    task = insert_task(engine, upload_source(tsettings, short_source), SMALL)
    with (
        worker_thread(tsettings, engine, worker_id="worker-a"),
        worker_thread(tsettings, engine, worker_id="worker-b"),
    ):
        submit(tsettings, task)
        submit(tsettings, task)
        wait_status(engine, task.task_id, TaskStatus.PROCESSED)
    # Leaving the block drains both workers: a copy still held is acked or nacked first.
    assert len(notifier.outcomes(task.task_id)) == 1
    assert len(notifier.starts(task.task_id)) == 1


def test_cancellation_stops_ffmpeg_and_leaves_no_clips(tsettings, engine, notifier, long_source, caplog):
    caplog.set_level(logging.INFO, logger="services.transcoder")
    task = insert_task(engine, upload_source(tsettings, long_source), SLOW)
    with worker_thread(tsettings, engine):
        submit(tsettings, task)
        (ffmpeg,) = wait_for(ffmpeg_of_this_process, 60, "ffmpeg to start")
        cancel_task(engine, task.task_id)
        wait_for(lambda: gone(ffmpeg), 30, "ffmpeg to be stopped")
        wait_for(
            lambda: any("canceled: ffmpeg stopped" in r.getMessage() for r in caplog.records),
            30,
            "the worker to ack the canceled task",
        )
    assert clip_objects(tsettings, task.task_id) == []
    assert task_row(engine, task.task_id)["status"] == "canceled"
    assert notifier.outcomes(task.task_id) == []
    assert [s[0] for s in notifier.statuses(task.task_id)][-1] == "canceled"


@pytest.mark.slow
def test_a_killed_worker_s_task_is_finished_by_another(tsettings, engine, notifier, long_source, tmp_path):
    task = insert_task(engine, upload_source(tsettings, long_source), SLOW)
    with worker_process(tsettings, tmp_path / "a.log") as first:
        submit(tsettings, task)
        (ffmpeg,) = wait_for(first.ffmpeg_children, 60, "the first worker's ffmpeg")
        with worker_process(tsettings, tmp_path / "b.log") as second:
            first.process.send_signal(signal.SIGKILL)
            first.process.wait(10)
            wait_for(lambda: gone(ffmpeg), 10, "the killed worker's ffmpeg to die with it")
            row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED, timeout=300)
            assert row["status"] == "processed", second.log()
    assert row["attempt"] == 2
    (outcome,) = notifier.outcomes(task.task_id)
    assert outcome.attempt == 2 and len(outcome.outputs) == 1
    assert clip_objects(tsettings, task.task_id) == [
        f"tasks/{task.task_id}/part-01-preview.mp4",
        f"tasks/{task.task_id}/part-01.jpg",
        f"tasks/{task.task_id}/part-01.mp4",
    ]


def test_sigterm_lets_the_running_clip_finish(tsettings, engine, notifier, short_source, tmp_path):
    task = insert_task(engine, upload_source(tsettings, short_source))
    with worker_process(tsettings, tmp_path / "worker.log") as worker:
        submit(tsettings, task)
        wait_for(worker.ffmpeg_children, 60, "ffmpeg to start")
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(120) == 0, worker.log()
    assert "draining" in worker.log()
    row = task_row(engine, task.task_id)
    assert (row["status"], row["attempt"]) == ("processed", 1)
    assert len(notifier.outcomes(task.task_id)) == 1


@pytest.mark.slow
def test_sigterm_hands_the_task_back_when_the_grace_period_ends(
    tsettings, engine, notifier, long_source, tmp_path
):
    task = insert_task(engine, upload_source(tsettings, long_source), SLOW)
    impatient = tsettings.model_copy(update={"drain_grace_seconds": 1.0})
    with worker_process(impatient, tmp_path / "first.log") as first:
        submit(tsettings, task)
        (ffmpeg,) = wait_for(first.ffmpeg_children, 60, "ffmpeg to start")
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(60) == 0, first.log()
    assert gone(ffmpeg)
    assert "handing the task back" in first.log()
    assert task_row(engine, task.task_id)["status"] == "processing"
    with worker_thread(tsettings, engine):
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, timeout=300)
    assert row["attempt"] == 2
    assert len(notifier.outcomes(task.task_id)) == 1


@pytest.mark.parametrize(
    "failures, tries, outcome, attempt",
    [
        (2, 3, "processed", 1),  # the in-place retries carry it
        (3, 3, "processed", 2),  # out of tries: handed back, the next delivery uploads
        (2, 2, "processed", 2),  # RETRY_TRIES bounds the tries in place, not MAX_ATTEMPTS
        (1000, 3, "failed", 3),  # out of tries on every attempt: failed on the last, with the cause
    ],
)
def test_transient_storage_failures_are_retried_then_bounded(
    tsettings, engine, notifier, short_source, storage_emulator_host, failures, tries, outcome, attempt
):
    tsettings = tsettings.model_copy(update={"retry_tries": tries})
    task = insert_task(engine, upload_source(tsettings, short_source), SMALL)
    with (
        FlakyStorageProxy(storage_emulator_host, failures) as proxy,
        worker_thread(tsettings, engine, storage_client=proxy.client()),
    ):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
    assert (row["status"], row["attempt"]) == (outcome, attempt), row
    assert len(notifier.outcomes(task.task_id)) == 1
    if outcome == "processed":
        assert proxy.failed == failures
    else:
        assert attempt == tsettings.max_attempts
        assert proxy.failed == tries * attempt  # every try of every attempt
        assert "storing a clip failed" in row["failure_reason"]
        assert f"gave up after {tries} tries" in row["failure_reason"]
        assert f"gave up after {attempt} attempts" in row["failure_reason"]
        assert clip_objects(tsettings, task.task_id) == []


def test_a_task_given_up_on_leaves_no_outputs_of_its_earlier_attempts(tsettings, engine, notifier):
    task = insert_task(engine, "https://videos.example/run.mp4", SMALL)
    # Every attempt so far uploaded a clip and died before its outcome.
    mark_interrupted(engine, task.task_id, tsettings.max_attempts)
    partial = store_partial_outputs(tsettings, task.task_id)
    assert clip_objects(tsettings, task.task_id) == partial
    with worker_thread(tsettings, engine):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.FAILED, TaskStatus.PROCESSED)
    assert row["failure_reason"] == f"processing was interrupted {tsettings.max_attempts} times; giving up"
    assert row["attempt"] == tsettings.max_attempts
    assert clip_objects(tsettings, task.task_id) == []
    assert len(notifier.outcomes(task.task_id)) == 1


def test_outputs_storage_will_not_delete_leave_the_failure_its_own_reason(
    tsettings, engine, notifier, storage_emulator_host
):
    # The source is refused (a permanent failure of the first attempt); deleting the
    # task's outputs then meets a storage that answers 503 to every listing.
    task = insert_task(engine, "http://127.1/run.mp4", SMALL)
    with (
        FlakyStorageProxy(storage_emulator_host, 1000, refuse=listings_of(tsettings.clips_bucket)) as proxy,
        worker_thread(tsettings, engine, storage_client=proxy.client()),
    ):
        submit(tsettings, task)
        row = wait_status(engine, task.task_id, TaskStatus.FAILED, TaskStatus.PROCESSED)
    assert (row["status"], row["attempt"]) == ("failed", 1), row
    assert "loopback" in row["failure_reason"], row
    assert proxy.failed == tsettings.retry_tries  # the deletion was tried, in place
    assert len(notifier.outcomes(task.task_id)) == 1


HOSTILE_NAMES = {"videos.example": ["10.0.0.1"]}


@pytest.mark.security
def test_ssrf_targets_fail_the_task_at_once(tsettings, engine, notifier):
    targets = {
        "http://169.254.169.254/computeMetadata/v1/": "metadata",
        "http://[::ffff:127.0.0.1]/": "loopback",
        "http://127.1/": "loopback",
        "http://videos.example/run.mp4": "private",
    }
    tasks = {insert_task(engine, url, SMALL): reason for url, reason in targets.items()}
    with worker_thread(tsettings, engine, resolver=lambda host, port: HOSTILE_NAMES[host]):
        for task in tasks:
            submit(tsettings, task)
        rows = {
            task: wait_status(engine, task.task_id, TaskStatus.FAILED, TaskStatus.PROCESSED) for task in tasks
        }
    for task, reason in tasks.items():
        row = rows[task]
        assert row["status"] == "failed" and reason in row["failure_reason"], row
        assert row["attempt"] == 1
        assert clip_objects(tsettings, task.task_id) == []


class SourceServer:
    """Serves one video on loopback, and a redirect to a private address."""

    def __init__(self, video: bytes) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                if self.path == "/run.mp4":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(video)))
                    self.end_headers()
                    self.wfile.write(video)
                else:
                    self.send_response(302)
                    self.send_header("Location", "http://10.0.0.1/run.mp4")
                    self.send_header("Content-Length", "0")
                    self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.security
def test_url_sources_on_the_local_stack(tsettings, engine, notifier, short_source):
    local = tsettings.model_copy(update={"allow_loopback_sources": True})
    server = SourceServer(short_source.read_bytes())
    fetched = insert_task(engine, f"{server.base}/run.mp4", SMALL)
    redirected = insert_task(engine, f"{server.base}/elsewhere", SMALL)
    try:
        with worker_thread(local, engine):
            submit(local, fetched)
            submit(local, redirected)
            done = wait_status(engine, fetched.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
            refused = wait_status(engine, redirected.task_id, TaskStatus.PROCESSED, TaskStatus.FAILED)
    finally:
        server.close()
    assert done["status"] == "processed", done
    assert refused["status"] == "failed" and "private" in refused["failure_reason"]


def test_a_database_it_cannot_reach_hands_messages_back_and_keeps_the_worker_pulling(
    tsettings, engine, short_source, caplog
):
    caplog.set_level(logging.ERROR, logger="services.transcoder.worker")
    task = insert_task(engine, upload_source(tsettings, short_source), SMALL)
    unreachable = create_engine(
        tsettings.model_copy(
            update={
                "database_url": "postgresql+pg8000://idrl:idrl@127.0.0.1:9/idrl",
                "db_pool_timeout_seconds": 1.0,
            }
        )
    )
    try:
        # worker_thread raises on exit if the worker's run() ended with an exception.
        with worker_thread(tsettings, unreachable) as worker:
            submit(tsettings, task)
            wait_for(
                lambda: (
                    sum(
                        "handing the message back" in r.getMessage()
                        and getattr(r, "task_id", None) == str(task.task_id)
                        for r in caplog.records
                    )
                    >= 2
                ),
                60,
                "the message to be handed back, delivered again, and handed back again",
            )
            assert not worker._draining.is_set()
    finally:
        unreachable.dispose()
    assert task_row(engine, task.task_id)["status"] == "queued"
