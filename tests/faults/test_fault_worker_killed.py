"""Drill 1: a transcoder worker is SIGKILLed while its ffmpeg makes a task's second clip.
The task's two parts are made across the two workers (``FANOUT_MIN_PARTS``): the other
worker makes part 1, and takes part 2 once Pub/Sub gives its message back, as that
part's second attempt. Part 1 is not made again, the task ends processed once, and
nothing is orphaned in the bucket (the parts' segments included)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from infra.local.process import wait_until
from tests.support.client import PlatformClient
from tests.support.db import clip_rows, part_attempts, task_row
from tests.support.faults import (
    FaultStack,
    assert_final_state,
    fault_stack,
    ffmpeg_of,
    log_messages,
    wait_for,
    wait_until_settled,
)
from tests.support.worker import gone

pytestmark = [pytest.mark.faults, pytest.mark.slow]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, storage_emulator_host) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-worker-killed"),
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=2,
    ) as stack:
        yield stack


def test_a_worker_killed_mid_clip_leaves_one_processed_task_and_no_orphan(
    stack: FaultStack, source_server, two_part_source, short_source, record_recovery
):
    athlete = PlatformClient.sign_up(stack.base_url, "killed")
    task_id = athlete.submit_url(source_server.url(two_part_source))["id"]

    # The moment: a worker's ffmpeg is making part 2.
    athlete.wait_for(task_id, {"processing"}, interval=0.05, while_waiting=stack.assert_running)

    def making_part_2():
        for worker in stack.workers():
            ffmpeg = ffmpeg_of(worker, making="part-02.mp4")
            if ffmpeg is not None:
                return worker, ffmpeg
        return None

    victim, ffmpeg = wait_for(making_part_2, timeout=120, interval=0.02, what="ffmpeg making the second clip")
    survivor = next(worker for worker in stack.workers() if worker is not victim)
    assert athlete.task(task_id)["status"] == "processing", "the task finished before the kill"

    stack.kill9(victim, whole_group=False)  # the worker alone: its ffmpeg must die with it
    killed_at = time.monotonic()
    assert wait_until(lambda: gone(ffmpeg), timeout=30), f"ffmpeg {ffmpeg.pid} outlived its worker"

    try:
        settled_at = wait_until_settled(stack)
    finally:
        stack.start_again(victim)  # as the instance group would
    record_recovery(
        settled_at - killed_at,
        "SIGKILL -> the part made by the other worker (Pub/Sub "
        f"redelivers once the lease lapses); {stack.supervisor.describe()}",
    )

    final = assert_final_state(stack, [task_id])
    assert final.of([task_id]) == ["processed"]
    row = task_row(stack.engine, task_id)
    assert row["attempt"] == 1, "the task was planned once"
    # Only the killed part was made again; part 1 was made once.
    assert part_attempts(stack.engine, task_id) == {1: 1, 2: 2}
    assert "part 2 of 2, attempt 2" in log_messages(survivor, task_id)
    assert [clip["index"] for clip in clip_rows(stack.engine, task_id)] == [1, 2]
    assert stack.clip_objects(task_id) == sorted(
        f"tasks/{task_id}/part-0{index}{kind}"
        for index in (1, 2)
        for kind in (".jpg", ".mp4", "-preview.mp4")
    )

    # The restarted worker is a working member of the stack again.
    stack.wait_healthy()
    second = athlete.submit_url(source_server.url(short_source))["id"]
    assert athlete.wait_for(second, timeout=300, while_waiting=stack.assert_running)["status"] == "processed"
    assert_final_state(stack, [task_id, second])
