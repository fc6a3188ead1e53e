"""A task's objects in Cloud Storage: download links, streaming downloads, deletion.

Download links are V4 signed URLs when ``signed_urls`` is on (Google Cloud); otherwise
they point at this api's own routes, which stream the object from storage (the local
emulator has no signing).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta

import filetype
import google.auth.credentials
import google.auth.transport.requests
import requests
from google.api_core.exceptions import GoogleAPIError, NotFound
from google.cloud import storage as gcs
from google.cloud.storage.exceptions import DataCorruption, InvalidResponse

from shared import storage
from shared.config import Settings
from shared.errors import DependencyUnavailable

log = logging.getLogger(__name__)

# How a storage call fails when the service or the network does.
STORAGE_ERRORS = (GoogleAPIError, requests.exceptions.RequestException, InvalidResponse,
                  DataCorruption)

_STREAM_BYTES = 1024 * 1024


def storage_unavailable(exc: Exception) -> DependencyUnavailable:
    """The 503 for a storage failure: the details go to the log, not to the client."""
    log.warning("storage unavailable: %s", exc)
    return DependencyUnavailable("storage is unavailable, try again")


def upload_object_name(task_id: uuid.UUID) -> str:
    """The uploads-bucket object that holds a task's original."""
    return f"uploads/{task_id}/source"


def delete_task_objects(settings: Settings, task_id: uuid.UUID) -> int:
    """Delete everything stored for a task in both buckets; returns how many objects went.

    Raises one of :data:`STORAGE_ERRORS` when storage is unreachable (the caller may retry:
    deleting what is already gone is not an error).
    """
    return storage.delete_prefix(settings.uploads_bucket, f"uploads/{task_id}/") + storage.delete_prefix(
        settings.clips_bucket, f"tasks/{task_id}/"
    )


def ping_storage(settings: Settings) -> None:
    """Raise unless the uploads bucket can be listed (the readiness check)."""
    # No retry: a readiness probe must answer within the load balancer's timeout, and a
    # storage outage is exactly what it reports.
    list(storage.storage_client().list_blobs(settings.uploads_bucket, max_results=1, timeout=5,
                                             retry=None))


def signed_url(blob: gcs.Blob, minutes: int) -> str:
    """A V4 signed GET URL for ``blob``, valid ``minutes``.

    With a service account key the URL is signed locally; with the metadata server's
    credentials (Compute Engine, Cloud Run) it is signed through the IAM signBlob API.
    """
    credentials = blob.client._credentials
    extra = {}
    if not isinstance(credentials, google.auth.credentials.Signing):
        if not credentials.valid:
            credentials.refresh(google.auth.transport.requests.Request())
        extra = {"service_account_email": credentials.service_account_email,
                 "access_token": credentials.token}
    return blob.generate_signed_url(version="v4", expiration=timedelta(minutes=minutes),
                                    method="GET", **extra)


def download_name(task_id: uuid.UUID, what: str, content_type: str | None) -> str:
    """A safe file name for a download: the task id, a word, and the extension of the
    stored content's type — never the client's own name, so an MP4 uploaded as
    ``run.html`` downloads as ``.mp4``."""
    kind = filetype.get_type(mime=content_type) if content_type else None
    return f"{task_id}-{what}" + (f".{kind.extension}" if kind is not None else "")


def open_stream(uri: str) -> tuple[gcs.Blob, Iterator[bytes]] | None:
    """The object's metadata and an iterator over its bytes, read in ranged chunks (the
    object is never held whole); None if it does not exist."""
    blob = storage.blob(uri)
    try:
        blob.reload()
    except NotFound:
        return None
    reader = blob.open("rb", chunk_size=_STREAM_BYTES)

    def chunks() -> Iterator[bytes]:
        with reader:
            while chunk := reader.read(_STREAM_BYTES):
                yield chunk

    return blob, chunks()
