"""The fair share through the whole stack: one user's burst of long sources holds at most
MAX_PARTS_IN_FLIGHT_PER_USER units of the fleet, so another user's single upload is
taken by the worker left free and its clip is delivered while the burst's second task
still waits (docs/queue.md, "Fair share")."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from shared.tables import task_parts, tasks
from tests.support.client import PlatformClient
from tests.support.media import make_source
from tests.support.stack import E2EStack, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BURST = 10


@pytest.fixture(scope="module")
def fair_share_stack(tmp_path_factory, pubsub_emulator_host, storage_emulator_host) -> Iterator[E2EStack]:
    # One unit per user on a fleet of two one-slot workers: a burst can never take the
    # whole fleet, so what the test shows does not hang on the order Pub/Sub delivers in.
    with running_stack(
        tmp_path_factory.mktemp("e2e-fair-share"),
        pubsub_emulator_host=pubsub_emulator_host,
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=2,
        settings={"max_parts_in_flight_per_user": "1", "transcoder_concurrency": "1"},
    ) as stack:
        yield stack


@pytest.fixture(scope="module")
def twenty_second_source(media_dir: Path) -> Path:
    return make_source(media_dir / "twenty-seconds.mp4", seconds=20)


def _let_out_one_at_a_time(stack: E2EStack, owner_id: str) -> list[str]:
    """Where the owner's parts overlapped in flight: each part must have been let out no
    earlier than the one before it ended, made or with its task deleted (the test's end
    deletes the burst one task at a time, and each deletion makes room for the next)."""
    ended = func.coalesce(task_parts.c.made_at, tasks.c.deleted_at)
    query = (
        select(task_parts.c.task_id, task_parts.c.index, task_parts.c.dispatched_at, ended.label("ended_at"))
        .join(tasks, tasks.c.id == task_parts.c.task_id)
        .where(tasks.c.owner_id == owner_id, task_parts.c.dispatched_at.is_not(None))
        .order_by(task_parts.c.dispatched_at)
    )
    with stack.engine.connect() as conn:
        rows = conn.execute(query).all()
    return [
        f"part {later.index} of {later.task_id} let out before part {earlier.index} of {earlier.task_id} ended"
        for earlier, later in zip(rows, rows[1:], strict=False)
        if earlier.ended_at is None or later.dispatched_at < earlier.ended_at
    ]


def test_a_second_users_clip_is_delivered_before_the_first_users_second_task_is_done(
    fair_share_stack: E2EStack, source_server, two_part_source, twenty_second_source
):
    stack = fair_share_stack
    burst, single = (PlatformClient.sign_up(stack.base_url, name) for name in ("burst", "single"))
    burst_tasks = [burst.submit_url(source_server.url(two_part_source))["id"] for _ in range(BURST)]
    try:
        task_id = single.submit_url(source_server.url(twenty_second_source))["id"]
        done = single.wait_for(task_id, timeout=300, while_waiting=stack.assert_running)
        burst_seen = [burst.task(burst_task) for burst_task in burst_tasks]

        assert done["status"] == "processed", done
        assert done["clips_total"] == len(done["clips"]) == 1, done
        assert single.get(done["clips"][0]["links"]["download"]).status_code == 200
        # Delivered while the burst's second task was still to be done, and its later
        # tasks still waited in line, with their place shown.
        assert burst_seen[1]["status"] in {"queued", "processing"}, burst_seen[1]
        assert all(task["status"] == "queued" and "queue" in task for task in burst_seen[2:]), burst_seen
    finally:
        for burst_task in burst_tasks:
            assert burst.delete(f"/tasks/{burst_task}").status_code == 204
    assert _let_out_one_at_a_time(stack, burst.id) == []
