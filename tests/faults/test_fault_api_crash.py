"""Drill 2: the api dies between committing a task and publishing its TaskSubmitted, on
a running stack. The task is durable in the outbox; once the api is started again its
relay publishes the row and the task is processed, once. The client, who saw an
error, retries with its Idempotency-Key and gets the same task back, not a second one."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.support.client import PlatformClient, assert_error
from tests.support.db import task_row
from tests.support.faults import (
    FaultStack,
    assert_final_state,
    fault_stack,
    outbox_rows,
    task_ids_of,
    wait_until_settled,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

# services/api/routes.py: the process exits right after the commit (tests only).
CRASH_AFTER_COMMIT = {"FAULT_CRASH_AFTER_COMMIT": "true", "OUTBOX_RELAY_ENABLED": "false"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory, storage_emulator_host) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-api-crash"),
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=1,
    ) as stack:
        yield stack


def test_an_api_killed_after_the_commit_loses_no_task(
    stack: FaultStack, source_server, short_source, record_recovery
):
    athlete = PlatformClient.sign_up(stack.base_url, "api-crash")
    api = stack.process("api")
    source_url = source_server.url(short_source)
    headers = {"Idempotency-Key": "run-of-the-day-1"}

    # The api, armed to die after the commit; its relay off so nothing but a restart publishes.
    api.stop()
    stack.start_again(api, **CRASH_AFTER_COMMIT)
    before = task_ids_of(stack.engine)
    crashed = athlete.session.post(
        athlete.url("/tasks"), json={"url": source_url}, headers=headers, timeout=30
    )
    assert_error(crashed, 503)  # the gateway's answer for an upstream that vanished
    assert "fault injection: exiting after the commit" in api.log_path.read_text()

    # Committed, never published.
    (task_id,) = task_ids_of(stack.engine) - before
    assert task_row(stack.engine, task_id)["status"] == "queued"
    assert [row["published_at"] for row in outbox_rows(stack.engine, task_id)] == [None]

    # kill -9 what is left of the api (gunicorn respawned a worker), then start it as it was.
    stack.kill9(api)
    for name in CRASH_AFTER_COMMIT:
        api.env.pop(name)
    restarted_at = time.monotonic()
    stack.start_again(api)
    settled_at = wait_until_settled(stack)
    record_recovery(
        settled_at - restarted_at,
        f"api restarted -> relay publishes -> processed; {stack.supervisor.describe()}",
    )

    assert [row["published_at"] is not None for row in outbox_rows(stack.engine, task_id)] == [True]
    final = assert_final_state(stack, [task_id])
    assert final.of([task_id]) == ["processed"]

    # The client's retry is answered with the task it could not see, not a second task.
    retried = athlete.session.post(
        athlete.url("/tasks"), json={"url": source_url}, headers=headers, timeout=30
    )
    assert retried.status_code == 200 and retried.headers.get("Idempotent-Replayed") == "true", retried.text
    assert retried.json()["id"] == task_id and retried.json()["status"] == "processed"
    assert task_ids_of(stack.engine) == before | {task_id}
