"""Where a task's objects live in Cloud Storage: every service names them through here.

- the uploads bucket holds a task's original at ``uploads/<task id>/source``;
- the clips bucket holds a task's outputs in its folder ``tasks/<task id>/``: each part's
  16:9 clip ``part-NN.mp4``, its poster ``part-NN.jpg`` and its preview
  ``part-NN-preview.mp4`` (NN counts from 01); another format's carry its name with an
  ``x`` for the colon: ``part-NN-9x16.mp4``, ``part-NN-9x16.jpg``,
  ``part-NN-9x16-preview.mp4``;
- while a task's parts are made across the fleet, the clips bucket also holds each
  part's segment of the source in the task's folder, ``segments/part-NN.mkv``; the
  worker that records the task's outcome deletes them.

The names are deterministic, so processing a task again overwrites its outputs rather
than adding to them, and deleting a task is deleting its two folders.
"""

from __future__ import annotations

from shared.storage import parse_gs_uri


def upload_folder(task_id: object) -> str:
    """The uploads-bucket prefix of everything stored for a task's original."""
    return f"uploads/{task_id}/"


def upload_object(task_id: object) -> str:
    """The uploads-bucket object that holds a task's original."""
    return upload_folder(task_id) + "source"


def task_folder(task_id: object) -> str:
    """The clips-bucket prefix under which every output of a task lives."""
    return f"tasks/{task_id}/"


# The format clips had before there were others: its objects keep their first names.
DEFAULT_FORMAT = "16:9"


def _part_stem(task_id: object, index: int, clip_format: str) -> str:
    stem = f"{task_folder(task_id)}part-{index:02d}"
    if clip_format == DEFAULT_FORMAT:
        return stem
    width, _, height = clip_format.partition(":")
    if not (width.isdigit() and height.isdigit()):
        raise ValueError(f"not a format: {clip_format!r}")
    return f"{stem}-{width}x{height}"


def clip_object(task_id: object, index: int, clip_format: str = DEFAULT_FORMAT) -> str:
    """The clips-bucket object of a task's clip number ``index`` in ``clip_format``."""
    return _part_stem(task_id, index, clip_format) + ".mp4"


def poster_object(task_id: object, index: int, clip_format: str = DEFAULT_FORMAT) -> str:
    """The clips-bucket object of the poster of a task's clip number ``index`` in ``clip_format``."""
    return _part_stem(task_id, index, clip_format) + ".jpg"


def preview_object(task_id: object, index: int, clip_format: str = DEFAULT_FORMAT) -> str:
    """The clips-bucket object of the animated preview of a task's clip number ``index``
    in ``clip_format``."""
    return _part_stem(task_id, index, clip_format) + "-preview.mp4"


def segment_object(task_id: object, index: int) -> str:
    """The clips-bucket object of the segment of the source part ``index`` is made from."""
    return f"{task_folder(task_id)}segments/part-{index:02d}.mkv"


def is_task_output(uri: str, clips_bucket: str, task_id: object) -> bool:
    """Whether ``uri`` names an object inside the task's own folder in the clips bucket.

    Anything else (another bucket, another task's folder, a name with ``.``, ``..`` or
    empty segments that a client might resolve elsewhere, or not a ``gs://`` URI at all)
    is not this task's output.
    """
    try:
        bucket, name = parse_gs_uri(uri)
    except ValueError:
        return False
    folder = task_folder(task_id)
    if bucket != clips_bucket or not name.startswith(folder):
        return False
    rest = name[len(folder) :].split("/")
    return all(segment not in ("", ".", "..") for segment in rest)
