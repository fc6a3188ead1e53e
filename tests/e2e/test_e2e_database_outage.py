"""PostgreSQL really stops for 10 s while tasks are being processed and their events
flow, then starts again on the same data: every task still reaches its final status and
every event published meanwhile is applied."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from tests.support.client import STATUS_RANK, PlatformClient, assert_error
from tests.support.db import applied_events, history
from tests.support.stack import E2EStack, EventTap, database_answers, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OUTAGE_SECONDS = 10
TASKS = 4


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory, pubsub_emulator_host, storage_emulator_host) -> Iterator[E2EStack]:
    with running_stack(
        tmp_path_factory.mktemp("e2e-outage"),
        pubsub_emulator_host=pubsub_emulator_host,
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=1,
        # A worker stops its ffmpeg at the first failed re-read of the task (its
        # claim may be gone with the database session). The outage starts at a
        # random point of the re-read period, so with re-reads every 5 s the events
        # flowing into it could last anything from 5 s to none (seen once in a
        # clean-clone run: the re-read came 2.2 s in and no progress event came
        # first). Re-reading every 30 s, the first task's ffmpeg runs on through the
        # outage, its progress published every 0.5 s.
        settings={"progress_interval_seconds": "0.5", "cancel_poll_seconds": "30"},
    ) as stack:
        yield stack


def _wait_ready(client: PlatformClient, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < deadline, "the api never became ready again after the outage"
        time.sleep(0.2)


def _wait_for_progress(client: PlatformClient, task_id: str, stack: E2EStack, timeout: float = 120) -> None:
    """Until ffmpeg reports progress on the task: its progress events are flowing."""
    deadline = time.monotonic() + timeout
    while (task := client.task(task_id))["progress"] == 0:
        assert task["status"] in ("queued", "processing"), task
        assert time.monotonic() < deadline, f"no progress on {task_id}: {task}"
        stack.assert_running()
        time.sleep(0.05)


def test_a_database_outage_loses_no_event(outage_stack: E2EStack, source_server, long_clip_source):
    stack = outage_stack
    athlete = PlatformClient.sign_up(stack.base_url, "outage")
    postgres = stack.process("postgres")
    with EventTap(stack.settings) as tap:
        task_ids = [athlete.submit_url(source_server.url(long_clip_source))["id"] for _ in range(TASKS)]
        _wait_for_progress(athlete, task_ids[0], stack)

        stopped = time.monotonic()
        postgres.stop()  # SIGINT: PostgreSQL's fast shutdown; the postmaster exits
        assert not postgres.running and not database_answers(stack.engine)
        try:
            # Down means down for clients too: a clear 503, never a 500.
            assert_error(athlete.get(f"/tasks/{task_ids[0]}"), 503)
            assert_error(
                athlete.session.post(
                    athlete.url("/tasks"), timeout=30, json={"url": source_server.url(long_clip_source)}
                ),
                503,
            )
            time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
        finally:
            restarted_at = datetime.now(UTC)
            with tap.paused():
                postgres.start()  # same data directory, same port
            postgres.stopping = False
            postgres.wait_ready(lambda: database_answers(stack.engine), timeout=60)

        _wait_ready(athlete)
        finished = [
            athlete.wait_for(task_id, timeout=300, while_waiting=stack.assert_running) for task_id in task_ids
        ]
        assert [task["status"] for task in finished] == ["processed"] * TASKS, finished
        assert tap.wait_until(
            lambda t: sum(e.status == "processed" for e in t.events(task_ids)) >= TASKS, timeout=30
        )

    events = tap.events(task_ids)
    handled = applied_events(stack.engine)
    lost = [event for event in events if event.event_id not in handled]
    assert not lost, f"events never reached the database: {lost}"
    # Published before the restart, handled after it: these crossed the outage.
    crossed = [
        event
        for event in events
        if event.occurred_at < restarted_at and handled[event.event_id] > restarted_at
    ]
    assert crossed, "no event had to wait for the database: the outage tested nothing"
    for task_id in task_ids:
        lines = history(stack.engine, task_id)
        assert [line.status for line in lines].count("processed") == 1, lines
        ranks = [(STATUS_RANK[line.status], line.progress) for line in lines]
        assert ranks == sorted(ranks), lines
