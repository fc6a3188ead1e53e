"""The seed's whole flow through the gateway, as the README shows it: sign up, log in,
submit by URL and by upload, follow the tasks, list them, download and check every clip,
delete."""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import pytest

from services.transcoder.pipeline import DEFAULT_LOGO
from shared.storage import storage_client
from tests.support.client import Observed, PlatformClient, assert_error
from tests.support.media import (
    CARD_MAX_DIFF,
    NOT_CARD_MIN_DIFF,
    frame_pixels,
    mean_abs_diff,
    probe_clip,
)
from tests.support.stack import assert_alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# ffprobe's container duration may differ from the planned one by about a frame.
DURATION_TOLERANCE = 0.1


def _objects(bucket: str, prefix: str) -> list[str]:
    return [blob.name for blob in storage_client().list_blobs(bucket, prefix=prefix)]


def _check_clip(path: Path, part_seconds: float, logo: bytes) -> None:
    facts = probe_clip(path)
    assert abs(facts.duration - (part_seconds + 2)) <= DURATION_TOLERANCE, (path.name, facts)
    assert (facts.width, facts.height) == (1280, 720), facts
    assert (facts.video_streams, facts.audio_streams) == (1, 1), facts
    # The first and the last second are the logo card; the part in between is not.
    assert mean_abs_diff(frame_pixels(path, 0), logo) < CARD_MAX_DIFF
    assert mean_abs_diff(frame_pixels(path, facts.duration - 0.2), logo) < CARD_MAX_DIFF
    assert mean_abs_diff(frame_pixels(path, 1 + part_seconds / 2), logo) > NOT_CARD_MIN_DIFF


def test_seed_flow_by_url_and_by_upload(local_stack, source_server, two_part_source, short_source, tmp_path):
    settings = local_stack.settings
    athlete = PlatformClient.sign_up(local_stack.base_url, "seed")
    alive = functools.partial(assert_alive, local_stack.stack)

    by_url = athlete.submit_url(source_server.url(two_part_source))
    by_upload = athlete.submit_file(short_source)
    assert by_url["source"] == {"kind": "url", "url": source_server.url(two_part_source)}
    assert by_upload["source"]["kind"] == "upload"

    # The original of an upload is kept and downloadable by its owner, byte for byte.
    original = athlete.download(by_upload["links"]["original"], tmp_path / "original.mp4")
    assert original.read_bytes() == short_source.read_bytes()

    observed = {by_url["id"]: Observed(), by_upload["id"]: Observed()}
    finished = {
        task_id: athlete.wait_for(task_id, observed=seen, while_waiting=alive)
        for task_id, seen in observed.items()
    }
    for task_id, task in finished.items():
        assert task["status"] == "processed", task
        assert task["progress"] == 100 and task["failure_reason"] is None
        assert observed[task_id].only_moved_forward(), observed[task_id].snapshots

    listing = athlete.get("/tasks", params={"max": 4, "order": 1})
    assert listing.status_code == 200, listing.text
    assert [item["id"] for item in listing.json()["tasks"]] == [by_upload["id"], by_url["id"]]
    assert all(item["status"] == "processed" for item in listing.json()["tasks"])

    logo = frame_pixels(DEFAULT_LOGO, 0)
    expected_parts = {by_url["id"]: [20.0, 3.0], by_upload["id"]: [3.0]}
    for task_id, parts in expected_parts.items():
        clips = finished[task_id]["clips"]
        assert [clip["index"] for clip in clips] == list(range(1, len(parts) + 1))
        for clip, part_seconds in zip(clips, parts):
            path = athlete.download(clip["links"]["download"], tmp_path / f"{task_id}-{clip['index']}.mp4")
            assert path.stat().st_size == clip["size_bytes"]
            assert abs(clip["duration_seconds"] - (part_seconds + 2)) <= DURATION_TOLERANCE
            _check_clip(path, part_seconds, logo)

    missing = athlete.get(f"/tasks/{uuid.uuid4()}")
    missing_body = assert_error(missing, 404, "task_not_found")
    for task_id, task in finished.items():
        assert _objects(settings.clips_bucket, f"tasks/{task_id}/"), "clips not in the bucket"
        deleted = athlete.delete(f"/tasks/{task_id}")
        assert deleted.status_code == 204, deleted.text
        assert assert_error(athlete.get(f"/tasks/{task_id}"), 404) == missing_body
        for clip in task["clips"]:
            assert_error(athlete.get(clip["links"]["download"]), 404)
        assert _objects(settings.clips_bucket, f"tasks/{task_id}/") == []
        assert _objects(settings.uploads_bucket, f"uploads/{task_id}/") == []
        # Deleting again is not an error.
        assert athlete.delete(f"/tasks/{task_id}").status_code == 204
    assert athlete.get("/tasks", params={"max": 4, "order": 1}).json()["tasks"] == []
