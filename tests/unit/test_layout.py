"""The storage layout: every object of a task, named in one place."""

from __future__ import annotations

import uuid

import pytest

from services.api.objects import delete_task_objects
from services.transcoder.plan import Part, clip_object_name, poster_object_name, task_prefix
from shared import layout
from shared.config import Settings

TASK = uuid.UUID("00000000-0000-4000-8000-00000000000a")
OTHER = uuid.UUID("00000000-0000-4000-8000-00000000000b")


def test_every_object_of_a_task_has_one_name():
    assert layout.upload_folder(TASK) == f"uploads/{TASK}/"
    assert layout.upload_object(TASK) == f"uploads/{TASK}/source"
    assert layout.task_folder(TASK) == f"tasks/{TASK}/"
    assert layout.clip_object(TASK, 3) == f"tasks/{TASK}/part-03.mp4"
    assert layout.poster_object(TASK, 3) == f"tasks/{TASK}/part-03.jpg"
    assert layout.clip_object(TASK, 120) == f"tasks/{TASK}/part-120.mp4"


def test_the_original_and_the_outputs_sit_in_their_own_folders():
    assert layout.upload_object(TASK).startswith(layout.upload_folder(TASK))
    for name in (layout.clip_object(TASK, 1), layout.poster_object(TASK, 1)):
        assert name.startswith(layout.task_folder(TASK))
    # One task's folder is never a prefix of another's.
    assert not layout.task_folder(OTHER).startswith(layout.task_folder(TASK))


def test_the_transcoder_names_its_outputs_through_the_layout():
    part = Part(index=2, start=20.0, duration=20.0)
    assert clip_object_name(TASK, part) == layout.clip_object(TASK, 2)
    assert poster_object_name(TASK, part) == layout.poster_object(TASK, 2)
    assert task_prefix(TASK) == layout.task_folder(TASK)


def test_the_api_deletes_the_two_folders_of_the_layout(monkeypatch):
    settings = Settings()
    deleted = []
    client = object()  # the app's storage client, passed through
    monkeypatch.setattr(
        "shared.storage.delete_prefix",
        lambda through, bucket, prefix: deleted.append((through, bucket, prefix)) or 1,
    )
    assert delete_task_objects(settings, TASK, client) == 2
    assert deleted == [
        (client, settings.uploads_bucket, layout.upload_folder(TASK)),
        (client, settings.clips_bucket, layout.task_folder(TASK)),
    ]


@pytest.mark.parametrize(
    "uri",
    [
        f"gs://idrl-clips/tasks/{TASK}/part-01.mp4",
        f"gs://idrl-clips/tasks/{TASK}/part-01.jpg",
        f"gs://idrl-clips/tasks/{TASK}/retry/part-01.mp4",
    ],
)
def test_an_object_in_the_tasks_folder_is_its_output(uri):
    assert layout.is_task_output(uri, "idrl-clips", TASK)


@pytest.mark.parametrize(
    "uri",
    [
        f"gs://idrl-clips/tasks/{OTHER}/part-01.mp4",  # another task's clip
        f"gs://idrl-uploads/uploads/{OTHER}/source",  # another user's upload
        f"gs://idrl-uploads/tasks/{TASK}/part-01.mp4",  # the right name in the wrong bucket
        f"gs://idrl-clips/tasks/{TASK}/../{OTHER}/part-01.mp4",
        f"gs://idrl-clips/tasks/{TASK}/./part-01.mp4",
        f"gs://idrl-clips/tasks/{TASK}//part-01.mp4",
        f"gs://idrl-clips/tasks/{TASK}/",  # the folder itself
        f"gs://idrl-clips/tasks/{TASK}",
        f"gs://idrl-clips/tasks/{TASK}0/part-01.mp4",
        f"gs://idrl-clips/xtasks/{TASK}/part-01.mp4",
        f"https://storage.googleapis.com/idrl-clips/tasks/{TASK}/part-01.mp4",
        "gs://idrl-clips",
        "",
    ],
)
def test_anything_else_is_not(uri):
    assert not layout.is_task_output(uri, "idrl-clips", TASK)


def test_each_format_has_its_own_names_and_16_9_keeps_the_first_ones():
    folder = layout.task_folder(TASK)
    assert layout.clip_object(TASK, 1, "16:9") == f"{folder}part-01.mp4"
    assert layout.poster_object(TASK, 1, "16:9") == f"{folder}part-01.jpg"
    assert layout.preview_object(TASK, 1) == f"{folder}part-01-preview.mp4"
    assert layout.clip_object(TASK, 1, "9:16") == f"{folder}part-01-9x16.mp4"
    assert layout.poster_object(TASK, 1, "9:16") == f"{folder}part-01-9x16.jpg"
    assert layout.preview_object(TASK, 1, "1:1") == f"{folder}part-01-1x1-preview.mp4"
    names = [
        name(TASK, 1, clip_format)
        for clip_format in ("16:9", "9:16", "1:1")
        for name in (layout.clip_object, layout.poster_object, layout.preview_object)
    ]
    assert len(set(names)) == len(names)
    assert all(layout.is_task_output(f"gs://clips/{name}", "clips", TASK) for name in names)
    with pytest.raises(ValueError):
        layout.clip_object(TASK, 1, "../x")
