"""Two transcoder workers on one subscription: a burst of tasks is shared between them,
each task is processed to completion exactly once, and a worker killed in the middle
of a clip loses nothing."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import psutil
import pytest

from tests.support.client import FINAL_STATUSES, STATUS_RANK, Observed, PlatformClient
from tests.support.db import applied_event_ids, clip_rows, history, task_row
from tests.support.stack import E2EStack, EventTap

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BURST = 10


def _processed_events(tap: EventTap, task_id: str) -> list:
    return [event for event in tap.events([task_id]) if event.status == "processed"]


def _assert_processed_once(stack: E2EStack, tap: EventTap, task_id: str) -> None:
    """One processed event, one processed history line, clips recorded once, and a history
    that never went back."""
    assert tap.wait_until(lambda t: _processed_events(t, task_id), timeout=30), "no processed event seen"
    assert len(_processed_events(tap, task_id)) == 1, _processed_events(tap, task_id)

    lines = history(stack.engine, task_id)
    assert [line.status for line in lines].count("processed") == 1, lines
    assert lines[0].status == "queued", lines
    ranks = [(STATUS_RANK[line.status], line.progress) for line in lines]
    assert ranks == sorted(ranks), lines
    attempts = [line.attempt for line in lines if line.status != "queued"]
    assert attempts == sorted(attempts), lines

    rows = clip_rows(stack.engine, task_id)
    assert [row["index"] for row in rows] == [1]
    assert rows[0]["uri"] == f"gs://{stack.settings.clips_bucket}/tasks/{task_id}/part-01.mp4"
    assert stack.clip_objects(task_id) == [
        f"tasks/{task_id}/part-01-preview.mp4",
        f"tasks/{task_id}/part-01.jpg",
        f"tasks/{task_id}/part-01.mp4",
    ]

    # Every event that went over task-events was seen by the notifier (applied or found stale).
    assert {event.event_id for event in tap.events([task_id])} <= applied_event_ids(stack.engine)


def test_a_burst_of_tasks_is_shared_by_two_workers_and_processed_once_each(
    two_worker_stack: E2EStack, source_server, short_source
):
    stack = two_worker_stack
    athlete = PlatformClient.sign_up(stack.base_url, "burst")
    source_url = source_server.url(short_source)
    with EventTap(stack.settings) as tap:
        with ThreadPoolExecutor(BURST) as pool:
            submitted = list(pool.map(lambda _: athlete.submit_url(source_url), range(BURST)))
        task_ids = [task["id"] for task in submitted]
        assert len(set(task_ids)) == BURST
        observed = {task_id: Observed() for task_id in task_ids}
        finished = {
            task_id: athlete.wait_for(
                task_id, observed=observed[task_id], timeout=300, while_waiting=stack.assert_running
            )
            for task_id in task_ids
        }

        for task_id in task_ids:
            assert finished[task_id]["status"] == "processed", finished[task_id]
            assert observed[task_id].only_moved_forward(), observed[task_id].snapshots
            _assert_processed_once(stack, tap, task_id)

    uris = [row["uri"] for task_id in task_ids for row in clip_rows(stack.engine, task_id)]
    assert len(uris) == len(set(uris)) == BURST
    finishers = {event.worker_id for event in tap.events(task_ids) if event.status == "processed"}
    assert {stack.worker_for(worker_id).name for worker_id in finishers} == {
        worker.name for worker in stack.workers()
    }, f"not both workers finished tasks: {finishers}"


def _ffmpeg_child(worker: psutil.Process) -> psutil.Process | None:
    try:
        return next((child for child in worker.children(recursive=True) if child.name() == "ffmpeg"), None)
    except psutil.NoSuchProcess:
        return None


def _assert_alive(worker) -> None:
    assert worker.running, f"{worker.name} ({worker.exit_description})\n{worker.log_excerpt()}"


def _gone(process: psutil.Process, timeout: float) -> bool:
    # Dead or a zombie: an orphan's zombie may stay if this machine's init does not reap.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if process.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


def test_a_worker_killed_mid_clip_loses_nothing(two_worker_stack: E2EStack, source_server, long_clip_source):
    stack = two_worker_stack
    athlete = PlatformClient.sign_up(stack.base_url, "killed")
    with EventTap(stack.settings) as tap:
        task_id = athlete.submit_url(source_server.url(long_clip_source))["id"]
        athlete.wait_for(
            task_id, {"processing"} | FINAL_STATUSES, interval=0.05, while_waiting=stack.assert_running
        )
        worker_id = task_row(stack.engine, task_id)["worker_id"]
        victim = stack.worker_for(worker_id)
        survivor = next(worker for worker in stack.workers() if worker is not victim)
        assert victim.running and survivor.running

        deadline = time.monotonic() + 60
        ffmpeg = None
        while ffmpeg is None and time.monotonic() < deadline:
            assert athlete.task(task_id)["status"] == "processing", "the clip finished before the kill"
            ffmpeg = _ffmpeg_child(psutil.Process(victim.pid))
            time.sleep(0.05)
        assert ffmpeg is not None, f"{worker_id} never ran ffmpeg for the task"

        os.kill(victim.pid, signal.SIGKILL)
        victim.popen.wait(timeout=30)
        try:
            # The kernel stops the worker's ffmpeg with it: no orphan keeps encoding.
            assert _gone(ffmpeg, timeout=30), f"ffmpeg {ffmpeg.pid} outlived its killed worker"
            final = athlete.wait_for(task_id, timeout=300, while_waiting=lambda: _assert_alive(survivor))
            assert final["status"] == "processed", final
            _assert_processed_once(stack, tap, task_id)
        finally:
            victim.start()  # the stack has its two workers again for the other tests

    # The survivor finished it (the victim came back only after that, under a new pid).
    assert survivor.pid is not None
    assert stack.worker_for(_processed_events(tap, task_id)[0].worker_id) is survivor
    row = task_row(stack.engine, task_id)
    assert row["attempt"] == 2, "the killed run counts as an attempt"
    lines = history(stack.engine, task_id)
    assert {line.attempt for line in lines if line.status == "processing"} == {1, 2}, lines
