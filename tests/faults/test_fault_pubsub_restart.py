"""Drill 3: the Pub/Sub emulator restarts while messages are in flight — TaskSubmitted
messages waiting on `video-tasks`, one task in ffmpeg, its events on `task-events`.

pstest keeps nothing across a restart. The stack creates the topics and subscriptions
again (`python -m infra.local provision`), but the messages are gone: every outbox row
was already marked published, so the relay alone would never send them again and the
waiting tasks would stay queued for ever. The api's sweep (services/api/outbox.py,
`requeue_stalled`) publishes again the TaskSubmitted of a task still queued — or
processing without news — `outbox_requeue_after_seconds` after its publication.

The drill provisions only once the worker and the notifier have each seen their
streaming pull end with NOT_FOUND (it reconnects while the subscription does not exist
yet): both log it and open the pull again after a pause (`shared.pubsub.keep_pulling`),
so no process exits — the drill's supervisor, which would start one again as systemd
does on Google Cloud, has nothing to do.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from infra.local.process import tcp_probe
from tests.support.client import PlatformClient
from tests.support.faults import (
    FaultStack,
    active_tasks,
    assert_final_state,
    fault_stack,
    ffmpeg_of,
    outbox_rows,
    wait_for,
    wait_until_settled,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

TASKS = 4
# The sweep waits 15 min by default; the drill shortens the wait, not the mechanism.
REQUEUE_AFTER_SECONDS = 15


@pytest.fixture(scope="module")
def stack(tmp_path_factory, storage_emulator_host) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-pubsub-restart"),
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=1,
        settings={"outbox_requeue_after_seconds": str(REQUEUE_AFTER_SECONDS)},
    ) as stack:
        yield stack


def test_a_pubsub_restart_with_messages_in_flight_loses_no_task(
    stack: FaultStack, source_server, short_source, record_recovery
):
    athlete = PlatformClient.sign_up(stack.base_url, "pubsub")
    task_ids = [athlete.submit_url(source_server.url(short_source))["id"] for _ in range(TASKS)]
    (worker,) = stack.workers()
    # One task in ffmpeg; the others' messages wait in the subscription.
    wait_for(
        lambda: ffmpeg_of(worker),
        timeout=120,
        interval=0.05,
        what="the worker's ffmpeg",
        while_waiting=stack.assert_running,
    )

    pubsub = stack.process("pubsub-pstest")
    pubsub.stop()
    with stack.engine.connect() as conn:
        lost_at = conn.execute(select(func.now())).scalar_one()
    # As far as the outbox knows, every TaskSubmitted went out; some tasks still wait.
    for task_id in task_ids:
        assert [row["published_at"] < lost_at for row in outbox_rows(stack.engine, task_id)] == [True]
    assert sum(status == "queued" for _, status in active_tasks(stack.engine)) >= 2
    pubsub.start()
    pubsub.wait_ready(tcp_probe(stack.config.host, stack.config.pubsub_port), timeout=60)
    pullers = [worker, stack.process("notifier")]
    wait_for(
        lambda: all("opening it again" in p.log_path.read_text() for p in pullers),
        timeout=120,
        what="the worker's and the notifier's pulls to end with NOT_FOUND and be opened again",
        while_waiting=stack.supervisor,
    )
    stack.provision()
    restored_at = time.monotonic()

    settled_at = wait_until_settled(stack)
    record_recovery(
        settled_at - restored_at,
        "emulator back and provisioned -> the sweep republishes the lost TaskSubmitted "
        f"-> every task final; {stack.supervisor.describe()}",
    )

    assert stack.supervisor.restarts == []  # the pulls outlived the missing subscriptions
    final = assert_final_state(stack, task_ids)
    assert final.of(task_ids) == ["processed"] * TASKS
    # What was waiting in the emulator was lost with it and went out again afterwards.
    republished = [
        task_id for task_id in task_ids if outbox_rows(stack.engine, task_id)[0]["published_at"] > lost_at
    ]
    assert republished, "no TaskSubmitted was published again: the restart lost nothing?"
    assert "publishing it again" in stack.process("api").log_path.read_text()
