"""Drill 6: the worker's scratch disk is full — a 20 MB tmpfs over its `scratch_dir`,
filled until only the source still fits — so ffmpeg fails while it writes the clip.
The task ends failed with the reason; the worker lives on, leaves no temporary file and
no partial clip, and once the disk has room again it processes the next task."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.client import PlatformClient
from tests.support.db import task_row
from tests.support.faults import (
    FaultStack,
    TmpfsRefused,
    assert_final_state,
    fault_stack,
    fill_disk,
    log_messages,
    tmpfs,
    wait_until_settled,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# Room left beside the source: a small part of the clip ffmpeg writes (hundreds of KiB).
HEADROOM_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def stack(tmp_path_factory, storage_emulator_host) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-scratch-full"),
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=1,
    ) as stack:
        yield stack


@pytest.fixture
def scratch_tmpfs(stack: FaultStack) -> Iterator[Path]:
    """A 20 MB tmpfs mounted over the worker's scratch folder, unmounted afterwards."""
    try:
        with tmpfs(stack.scratch_dir, size="20m") as mount_point:
            yield mount_point
    except TmpfsRefused as refused:
        pytest.skip(f"mounting a tmpfs needs root with CAP_SYS_ADMIN: {refused}")


def test_a_full_scratch_disk_fails_the_task_and_spares_the_worker(
    stack: FaultStack, scratch_tmpfs: Path, source_server, short_source, record_recovery
):
    athlete = PlatformClient.sign_up(stack.base_url, "scratch")
    (worker,) = stack.workers()
    worker_pid = worker.pid

    filler = fill_disk(scratch_tmpfs, short_source.stat().st_size + HEADROOM_BYTES)
    doomed = athlete.submit_url(source_server.url(short_source))["id"]
    wait_until_settled(stack)
    state = assert_final_state(stack, [doomed])
    assert state.of([doomed]) == ["failed"]
    # ffmpeg failed while writing. A machine's error is handed back for another delivery
    # until the last attempt, which fails the task with that cause.
    full = [message for message in log_messages(worker, doomed) if "No space left on device" in message]
    assert full, log_messages(worker, doomed)
    reason = state.failure_reasons[doomed]
    max_attempts = stack.settings.max_attempts
    assert "No space left on device" in reason and f"gave up after {max_attempts} attempts" in reason, reason
    # The run's temporary folder went with the failure: only the filler is left.
    assert list(scratch_tmpfs.iterdir()) == [filler]

    filler.unlink()
    room_at = time.monotonic()
    following = athlete.submit_url(source_server.url(short_source))["id"]
    settled_at = wait_until_settled(stack)
    record_recovery(
        settled_at - room_at,
        "disk has room again -> the same worker processes the next task "
        f"(its clip included); the full disk failed the task after {len(full)} ENOSPC run(s): "
        f"{reason!r}; {stack.supervisor.describe()}",
    )
    assert list(scratch_tmpfs.iterdir()) == []

    state = assert_final_state(stack, [doomed, following])
    assert state.of([doomed, following]) == ["failed", "processed"]
    assert stack.clip_objects(doomed) == []
    # One worker, never restarted: the one that failed the task made the next one.
    assert worker.pid == worker_pid and worker.running and not stack.supervisor.restarts
    assert task_row(stack.engine, following)["attempt"] == 1
