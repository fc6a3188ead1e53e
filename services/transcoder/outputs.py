"""A task's outputs in the clips bucket: uploading each clip with its poster and preview, deleting
what a task's runs left, and what a storage error means for the task."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests
from google.api_core import exceptions as gexc
from google.auth import exceptions as auth_exceptions
from google.cloud import storage

from services.transcoder.errors import PermanentFailure, TransientFailure
from services.transcoder.pipeline import LocalClip
from services.transcoder.plan import clip_object_name, poster_object_name, preview_object_name, task_prefix
from shared import layout
from shared.events import ClipOutput
from shared.logging import task_logger
from shared.storage import gs_uri

log = task_logger(__name__)


class ClipStore:
    """The clips bucket, as one worker writes to it."""

    def __init__(self, client: storage.Client, *, bucket: str, chunk_bytes: int) -> None:
        self.client = client
        self.bucket = bucket
        # A clip larger than the chunk goes up as a resumable upload holding one chunk
        # in memory at a time (the client's default chunk is 100 MB).
        self.chunk_bytes = chunk_bytes

    def upload(self, task_id: uuid.UUID, clip: LocalClip) -> ClipOutput:
        """Store a clip, its poster and its preview under the task's names for the clip's
        format; a second run overwrites."""
        bucket = self.client.bucket(self.bucket)
        clip_name = clip_object_name(task_id, clip.part, clip.format)
        poster_name = poster_object_name(task_id, clip.part, clip.format)
        preview_name = preview_object_name(task_id, clip.part, clip.format)
        files = [(clip_name, clip.path, "video/mp4"), (poster_name, clip.poster_path, "image/jpeg")]
        if clip.preview_path is not None:
            files.append((preview_name, clip.preview_path, "video/mp4"))
        with storage_errors("storing a clip"):
            # Retries are the worker's (one policy for every transient error), not the
            # client's own; the names are deterministic, so a retry overwrites.
            for name, path, content_type in files:
                bucket.blob(name, chunk_size=self.chunk_bytes).upload_from_filename(
                    str(path), content_type=content_type, retry=None
                )
        return ClipOutput(
            index=clip.part.index,
            format=clip.format,
            uri=gs_uri(self.bucket, clip_name),
            poster_uri=gs_uri(self.bucket, poster_name),
            preview_uri=gs_uri(self.bucket, preview_name) if clip.preview_path is not None else None,
            duration_seconds=clip.duration_seconds,
            size_bytes=clip.size_bytes,
        )

    def store_segment(self, task_id: uuid.UUID, index: int, path: Path) -> None:
        """Store part ``index``'s segment in the task's folder (``shared.layout.segment_object``)."""
        name = layout.segment_object(task_id, index)
        with storage_errors("storing a part's segment"):
            self.client.bucket(self.bucket).blob(name, chunk_size=self.chunk_bytes).upload_from_filename(
                str(path), content_type="video/x-matroska", retry=None
            )

    def delete_all(self, task_id: uuid.UUID, keep: Collection[str] = ()) -> int:
        """Delete every object under the task's prefix but those ``keep`` names (``gs://``
        URIs); returns how many went."""
        deleted = 0
        with storage_errors("deleting partial outputs"):
            # Without the client's own retries (which hold on for two minutes), as for uploads.
            for blob in self.client.list_blobs(self.bucket, prefix=task_prefix(task_id), retry=None):
                if gs_uri(self.bucket, blob.name) in keep:
                    continue
                try:
                    blob.delete(retry=None)
                    deleted += 1
                except gexc.NotFound:
                    pass  # the api's delete got there first
        return deleted


@contextmanager
def storage_errors(doing: str) -> Iterator[None]:
    """Turn storage and network errors into the pipeline's failure kinds."""
    try:
        yield
    except (
        gexc.ServerError,
        gexc.TooManyRequests,
        gexc.NotFound,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
        auth_exceptions.TransportError,
    ) as exc:
        log.warning("%s failed: %s", doing, exc)
        raise TransientFailure(f"{doing} failed ({_storage_summary(exc)})") from exc
    except gexc.ClientError as exc:
        log.warning("%s was refused: %s", doing, exc)
        raise PermanentFailure(f"{doing} was refused ({_storage_summary(exc)})") from exc


def _storage_summary(exc: BaseException) -> str:
    """What a task's owner may read of a storage error: its HTTP status, never the
    request line, which names the endpoint and the bucket (the log keeps it whole)."""
    code = getattr(exc, "code", None)
    return f"storage answered {int(code)}" if isinstance(code, int) else "storage did not answer"
