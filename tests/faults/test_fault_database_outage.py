"""Drill 4: PostgreSQL stops for 15 s while tasks are being processed and clients keep
submitting. Every submission made while it is down is refused with a 503 in the error
shape, and leaves nothing behind; every task accepted before or after reaches its final
state, and nothing is processed twice."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest

from tests.support.client import PlatformClient, assert_error
from tests.support.faults import (
    FaultStack,
    assert_final_state,
    fault_stack,
    ffmpeg_of,
    task_ids_of,
    wait_for,
    wait_until_settled,
)
from tests.support.stack import database_answers

pytestmark = [pytest.mark.faults, pytest.mark.slow]

OUTAGE_SECONDS = 15
BEFORE, AFTER = 4, 3
SUBMIT_EVERY_SECONDS = 0.5


@pytest.fixture(scope="module")
def stack(tmp_path_factory, storage_emulator_host) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-database-outage"),
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=2,
    ) as stack:
        yield stack


def test_a_database_outage_under_load_loses_no_accepted_task(
    stack: FaultStack, source_server, short_source, record_recovery
):
    # Several users, so the load stays under the per-user submission rate limit.
    athletes = itertools.cycle([PlatformClient.sign_up(stack.base_url, f"load-{n}") for n in range(3)])
    source_url = source_server.url(short_source)
    accepted = [next(athletes).submit_url(source_url)["id"] for _ in range(BEFORE)]
    wait_for(
        lambda: any(ffmpeg_of(worker) for worker in stack.workers()),
        timeout=120,
        interval=0.05,
        what="a worker's ffmpeg",
        while_waiting=stack.assert_running,
    )

    postgres = stack.process("postgres")
    postgres.stop()  # SIGINT: PostgreSQL's fast shutdown
    stopped_at = time.monotonic()
    refused = 0
    try:
        assert not database_answers(stack.engine)
        while time.monotonic() - stopped_at < OUTAGE_SECONDS:
            athlete = next(athletes)
            response = athlete.session.post(athlete.url("/tasks"), json={"url": source_url}, timeout=30)
            assert_error(response, 503)
            refused += 1
            assert_error(athlete.get(f"/tasks/{accepted[0]}"), 503)
            time.sleep(SUBMIT_EVERY_SECONDS)
    finally:
        postgres.start()  # same data directory, same port
        postgres.wait_ready(lambda: database_answers(stack.engine), timeout=60)
    back_at = time.monotonic()

    # Clients retry as soon as the api answers again; the load goes on.
    for _ in range(AFTER):
        athlete = next(athletes)
        deadline = time.monotonic() + 120
        while True:
            response = athlete.session.post(athlete.url("/tasks"), json={"url": source_url}, timeout=30)
            if response.status_code == 202:
                accepted.append(response.json()["id"])
                break
            assert_error(response, 503)
            assert time.monotonic() < deadline, "the api never accepted a submission again"
            time.sleep(SUBMIT_EVERY_SECONDS)

    settled_at = wait_until_settled(stack)
    final = assert_final_state(stack, accepted)
    statuses = final.of(accepted)
    record_recovery(
        settled_at - back_at,
        f"PostgreSQL back -> all {len(accepted)} accepted tasks final "
        f"({statuses.count('processed')} processed, {statuses.count('failed')} failed); "
        f"{refused} submissions refused with 503 during the outage; {stack.supervisor.describe()}",
    )
    # A refused submission left no task behind; an accepted one is never lost.
    assert task_ids_of(stack.engine) == set(accepted)
    assert statuses == ["processed"] * len(accepted), final.failure_reasons
