"""Drill 5: Cloud Storage answers 503 to everything for (at least) 10 s, starting while
the worker's ffmpeg makes a clip, so the clip's upload meets the outage. Uploads to the
api are refused with a clear 503 or held until storage answers; every task ends
processed once or failed with the storage error as its reason, and no partial object
stays in the clips bucket.

Run twice: with the worker's default retry budget (3 tries, 1 s then 2 s apart: shorter
than the outage — the task is handed back for another delivery when they run out, and
may end failed on its last attempt, with the storage error as its reason), and with a
first backoff of 4 s (4 s then 8 s: longer), where the in-place retries alone carry the
task over the outage and it ends processed in its first attempt."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.support.client import PlatformClient, assert_error
from tests.support.db import task_row
from tests.support.faults import (
    FaultStack,
    assert_final_state,
    fault_stack,
    ffmpeg_of,
    wait_for,
    wait_until_settled,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

OUTAGE_SECONDS = 10
# The api may hold a request while the storage client retries (its own deadline: 120 s).
API_TIMEOUT = 300


@pytest.fixture(scope="module")
def stack(tmp_path_factory, storage_emulator_host) -> Iterator[FaultStack]:
    with fault_stack(
        tmp_path_factory.mktemp("faults-storage-503"),
        storage_emulator_host=storage_emulator_host,
        transcoder_workers=1,
    ) as stack:
        yield stack


def _clip_uploads_refused(stack: FaultStack) -> int:
    """How many clip or poster uploads the proxy has answered 503 (one worker: one task
    at a time)."""
    bucket = f"/b/{stack.settings.clips_bucket}/o"
    return sum(line.startswith("POST /upload/") and bucket in line for line in stack.storage_proxy.refused)


@dataclass(frozen=True)
class Answer:
    """An api call made when the outage began: what it answered, and how long it took."""

    status: int
    seconds: float
    task_id: str | None


def _timed(call: Callable[[], requests.Response]) -> Answer:
    started = time.monotonic()
    response = call()
    seconds = time.monotonic() - started
    if response.request.path_url == "/readyz":
        # A readiness report, not an error: which dependency is down.
        expected = {"status": "ok" if response.status_code == 200 else "unavailable"}
        assert response.json().items() >= expected.items(), response.text
    elif response.status_code >= 400:
        assert_error(response, response.status_code)  # the error shape, whatever the code
    task_id = response.json()["id"] if response.status_code == 202 else None
    return Answer(response.status_code, seconds, task_id)


@dataclass(frozen=True)
class Outage:
    ended_at: float  # time.monotonic()
    clip_uploads_refused: int
    upload: Answer  # a client's upload (POST /tasks, multipart) sent as the outage began
    readiness: Answer  # GET /readyz sent as the outage began

    def describe(self) -> str:
        return (
            f"{self.clip_uploads_refused} clip uploads refused; an upload sent at the start answered "
            f"{self.upload.status} after {self.upload.seconds:.1f} s, /readyz {self.readiness.status} "
            f"after {self.readiness.seconds:.1f} s"
        )


def _storage_outage_during_upload(
    stack: FaultStack, athlete: PlatformClient, upload: Path, *, refusals: int = 1
) -> Outage:
    """Switch storage to 503 while the task's ffmpeg runs, for OUTAGE_SECONDS and until
    ``refusals`` of its clip uploads were refused. A client's upload and a readiness
    probe are sent as it begins; they are answered whenever the api answers."""
    (worker,) = stack.workers()
    wait_for(
        lambda: ffmpeg_of(worker),
        timeout=120,
        interval=0.02,
        what="the worker's ffmpeg",
        while_waiting=stack.assert_running,
    )
    refused_before = _clip_uploads_refused(stack)

    def post_upload() -> requests.Response:
        with upload.open("rb") as source:
            return athlete.session.post(
                athlete.url("/tasks"), timeout=API_TIMEOUT, files={"file": (upload.name, source, "video/mp4")}
            )

    with ThreadPoolExecutor(2) as pool:
        with stack.storage_proxy.outage():
            started = time.monotonic()
            upload_answer = pool.submit(_timed, post_upload)
            readiness_answer = pool.submit(
                _timed, lambda: requests.get(f"{stack.base_url}/readyz", timeout=API_TIMEOUT)
            )
            wait_for(
                lambda: (
                    time.monotonic() - started >= OUTAGE_SECONDS
                    and _clip_uploads_refused(stack) - refused_before >= refusals
                ),
                timeout=180,
                interval=0.1,
                what=f"{refusals} clip upload(s) refused during the outage",
            )
        ended_at = time.monotonic()
        outage = Outage(
            ended_at,
            _clip_uploads_refused(stack) - refused_before,
            upload_answer.result(),
            readiness_answer.result(),
        )
    # Refused with a clear 503, or held until storage answered again and then accepted.
    assert outage.upload.status in (202, 503), outage
    assert outage.readiness.status in (200, 503), outage
    return outage


def test_a_storage_outage_with_the_default_retry_budget(
    stack: FaultStack, source_server, short_source, record_recovery
):
    athlete = PlatformClient.sign_up(stack.base_url, "storage")
    task_id = athlete.submit_url(source_server.url(short_source))["id"]
    outage = _storage_outage_during_upload(stack, athlete, short_source)
    accepted = [task_id] + ([outage.upload.task_id] if outage.upload.task_id else [])

    settled_at = wait_until_settled(stack)
    final = assert_final_state(stack, accepted)
    record_recovery(
        settled_at - outage.ended_at,
        f"storage back -> task {final.of([task_id])[0]} (attempt "
        f"{task_row(stack.engine, task_id)['attempt']}); {outage.describe()}; "
        f"{stack.supervisor.describe()}",
    )
    # The worker's three tries span about 3 s: a clip upload that meets a 10 s outage
    # runs out of them, and the task is handed back; its later attempts may still meet
    # the outage. If the last one does, the task fails for that reason, and no other.
    status = final.of([task_id])[0]
    assert status == "processed" or final.failure_reasons[task_id].startswith("storing a clip failed"), (
        final.failure_reasons[task_id]
    )
    # What was accepted once storage answered again goes through.
    assert final.of(accepted[1:]) == ["processed"] * len(accepted[1:]), final.failure_reasons


def test_a_storage_outage_within_the_retry_budget(
    stack: FaultStack, source_server, short_source, record_recovery
):
    # 4 s then 8 s between the 3 tries. The outage lasts until the second try was
    # refused too (however slow ffmpeg is here), so only the third can succeed.
    (worker,) = stack.workers()
    stack.wait_healthy()
    worker.stop()
    stack.start_again(worker, RETRY_INITIAL_SECONDS="4")
    restarts_before = list(stack.supervisor.restarts)

    athlete = PlatformClient.sign_up(stack.base_url, "storage-retry")
    task_id = athlete.submit_url(source_server.url(short_source))["id"]
    outage = _storage_outage_during_upload(stack, athlete, short_source, refusals=2)
    accepted = [task_id] + ([outage.upload.task_id] if outage.upload.task_id else [])

    settled_at = wait_until_settled(stack)
    final = assert_final_state(stack, accepted)
    record_recovery(
        settled_at - outage.ended_at,
        f"storage back -> the next in-place retry uploads -> processed; {outage.describe()}",
    )
    assert final.of(accepted) == ["processed"] * len(accepted), final.failure_reasons
    # Carried over by the retries of its first attempt: no redelivery, no crash.
    assert task_row(stack.engine, task_id)["attempt"] == 1
    assert stack.supervisor.restarts == restarts_before
