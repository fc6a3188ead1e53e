"""A task made in several formats: the notifier stores a clip, poster and preview per
part and format, and the api answers each with its format and links that fetch exactly
that file."""

from __future__ import annotations

import uuid

from services.notifier.apply import Outcome, apply_status_change
from shared import layout
from shared.events import ClipOutput, TaskStatusChanged
from shared.lifecycle import TaskStatus
from shared.storage import storage_client
from tests.support.api import assert_error, insert_tasks, store_processed

FORMATS = ("16:9", "9:16", "1:1")


def _made_in_formats(engine, settings, task_id: uuid.UUID) -> dict[tuple[str, str], bytes]:
    """What the transcoder leaves for one part in three formats, applied by the notifier;
    the bytes stored under each (format, kind)."""
    bucket = storage_client().bucket(settings.clips_bucket)
    stored: dict[tuple[str, str], bytes] = {}
    outputs = []
    for clip_format in FORMATS:
        uris = {}
        for kind, name, content_type in (
            ("clip", layout.clip_object(task_id, 1, clip_format), "video/mp4"),
            ("poster", layout.poster_object(task_id, 1, clip_format), "image/jpeg"),
            ("preview", layout.preview_object(task_id, 1, clip_format), "video/mp4"),
        ):
            content = f"{kind} in {clip_format}".encode()
            bucket.blob(name).upload_from_string(content, content_type=content_type)
            stored[clip_format, kind] = content
            uris[kind] = f"gs://{settings.clips_bucket}/{name}"
        outputs.append(
            ClipOutput(
                index=1,
                format=clip_format,
                uri=uris["clip"],
                poster_uri=uris["poster"],
                preview_uri=uris["preview"],
                duration_seconds=22.0,
                size_bytes=len(stored[clip_format, "clip"]),
            )
        )
    event = TaskStatusChanged(
        task_id=task_id, status=TaskStatus.PROCESSED, attempt=1, progress=100, outputs=tuple(outputs)
    )
    result = apply_status_change(engine, event, clips_bucket=settings.clips_bucket, public_base_url="")
    assert result.outcome is Outcome.APPLIED
    return stored


def test_each_format_comes_back_with_links_to_its_own_files(client, engine, alice, api_settings):
    [task_id] = insert_tasks(engine, alice.id, 1)
    stored = _made_in_formats(engine, api_settings, task_id)

    body = client.get(f"/tasks/{task_id}", headers=alice.headers).get_json()

    assert sorted(clip["format"] for clip in body["clips"]) == sorted(FORMATS)
    by_format = {clip["format"]: clip for clip in body["clips"]}
    assert by_format["16:9"]["links"] == {
        "download": f"/tasks/{task_id}/clips/1",
        "poster": f"/tasks/{task_id}/clips/1/poster",
        "preview": f"/tasks/{task_id}/clips/1/preview",
    }
    assert by_format["9:16"]["links"]["download"] == f"/tasks/{task_id}/clips/1?format=9:16"
    links = [link for clip in body["clips"] for link in clip["links"].values()]
    assert len(set(links)) == 9
    names = set()
    for clip_format, clip in by_format.items():
        for kind, link in (("clip", "download"), ("poster", "poster"), ("preview", "preview")):
            response = client.get(clip["links"][link], headers=alice.headers)
            assert response.status_code == 200, (clip_format, kind)
            assert response.data == stored[clip_format, kind]
            names.add(response.headers["Content-Disposition"])
    assert len(names) == 9  # every download is named apart


def test_a_format_the_task_lacks_is_404_and_an_unknown_one_400(client, engine, alice, api_settings):
    [task_id] = insert_tasks(engine, alice.id, 1)
    store_processed(engine, api_settings, task_id, [b"only 16:9"])
    assert_error(
        client.get(f"/tasks/{task_id}/clips/0?format=9:16", headers=alice.headers), 404, "clip_not_found"
    )
    for path in ("", "/poster", "/preview"):
        assert_error(
            client.get(f"/tasks/{task_id}/clips/0{path}?format=4:3", headers=alice.headers),
            400,
            "invalid_parameter",
        )


def test_a_task_from_before_formats_reads_as_before(client, engine, alice, api_settings):
    [task_id] = insert_tasks(engine, alice.id, 1)
    store_processed(engine, api_settings, task_id, [b"an old clip"])

    (clip,) = client.get(f"/tasks/{task_id}", headers=alice.headers).get_json()["clips"]

    assert clip["format"] == "16:9"
    assert clip["links"] == {"download": f"/tasks/{task_id}/clips/0"}
    assert client.get(clip["links"]["download"], headers=alice.headers).data == b"an old clip"
    assert_error(
        client.get(f"/tasks/{task_id}/clips/0/preview", headers=alice.headers), 404, "file_not_found"
    )


def test_another_users_clip_formats_are_not_found(client, engine, alice, bob, api_settings):
    [task_id] = insert_tasks(engine, alice.id, 1)
    _made_in_formats(engine, api_settings, task_id)
    for path in ("?format=9:16", "/poster?format=1:1", "/preview"):
        assert_error(
            client.get(f"/tasks/{task_id}/clips/1{path}", headers=bob.headers), 404, "task_not_found"
        )
