"""A task's objects in Cloud Storage: download links, streaming downloads, deletion.

Download links are V4 signed URLs when ``signed_urls`` is on (Google Cloud); otherwise
they point at this api's own routes, which stream the object from storage (the local
emulator has no signing) and answer a single byte range the way Cloud Storage does.
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
from werkzeug.datastructures import ContentRange, Range
from werkzeug.http import parse_if_range_header

from shared import layout, storage
from shared.config import Settings
from shared.errors import DependencyUnavailable, DomainError

log = logging.getLogger(__name__)

# How a storage call fails when the service or the network does.
STORAGE_ERRORS = (GoogleAPIError, requests.exceptions.RequestException, InvalidResponse, DataCorruption)

_STREAM_BYTES = 1024 * 1024


def storage_unavailable(exc: Exception) -> DependencyUnavailable:
    """The 503 for a storage failure: the details go to the log, not to the client."""
    log.warning("storage unavailable: %s", exc)
    return DependencyUnavailable("storage is unavailable, try again")


def delete_task_objects(settings: Settings, task_id: uuid.UUID, client: gcs.Client) -> int:
    """Delete everything stored for a task in both buckets; returns how many objects went.

    Raises one of :data:`STORAGE_ERRORS` when storage is unreachable (the caller may retry:
    deleting what is already gone is not an error).
    """
    return storage.delete_prefix(
        client, settings.uploads_bucket, layout.upload_folder(task_id)
    ) + storage.delete_prefix(client, settings.clips_bucket, layout.task_folder(task_id))


def ping_storage(client: gcs.Client, settings: Settings) -> None:
    """Raise unless the uploads bucket can be listed (the readiness check)."""
    # No retry: a readiness probe must answer within the load balancer's timeout, and a
    # storage outage is exactly what it reports.
    list(client.list_blobs(settings.uploads_bucket, max_results=1, timeout=5, retry=None))


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
        extra = {
            "service_account_email": credentials.service_account_email,
            "access_token": credentials.token,
        }
    return blob.generate_signed_url(
        version="v4", expiration=timedelta(minutes=minutes), method="GET", **extra
    )


def download_name(task_id: uuid.UUID, what: str, content_type: str | None) -> str:
    """A safe file name for a download: the task id, a word, and the extension of the
    stored content's type — never the client's own name, so an MP4 uploaded as
    ``run.html`` downloads as ``.mp4``."""
    kind = filetype.get_type(mime=content_type) if content_type else None
    return f"{task_id}-{what}" + (f".{kind.extension}" if kind is not None else "")


class RangeNotSatisfiable(DomainError):
    """The one byte range asked for starts at or past the end of the object (416)."""

    status, code = 416, "range_not_satisfiable"

    def __init__(self, size: int) -> None:
        super().__init__(f"the range starts past the end of the file ({size} bytes)")
        # What the 416 says the object's length is: ``bytes */<size>``.
        self.content_range = ContentRange("bytes", None, None, size)


def requested_part(requested: Range | None, size: int) -> ContentRange | None:
    """The part of an object of ``size`` bytes that a parsed ``Range`` header asks for.

    None means "send the whole object": no header, another unit than bytes, or several
    ranges (RFC 9110 lets a server ignore Range; Cloud Storage answers a multi-range
    request with the whole object too). A range that runs past the end is cut at the
    end, a suffix longer than the object is the whole object, and a range starting at or
    past the end raises :class:`RangeNotSatisfiable`.
    """
    if requested is None or requested.units != "bytes" or len(requested.ranges) != 1:
        return None
    start, stop = requested.ranges[0]
    if start < 0:
        # ``bytes=-n``: the last n bytes; none of an empty object.
        if size == 0:
            raise RangeNotSatisfiable(size)
        return ContentRange("bytes", max(0, size + start), size, size)
    if start >= size:
        raise RangeNotSatisfiable(size)
    return ContentRange("bytes", start, size if stop is None else min(stop, size), size)


def entity_tag(blob: gcs.Blob) -> str | None:
    """The object's ETag for the download routes: its generation, which changes whenever
    the object is written again (None if storage gave none)."""
    return None if blob.generation is None else str(blob.generation)


def if_range_matches(header: str | None, etag: str | None) -> bool:
    """Whether a Range may be honoured under ``If-Range`` (true when there is none).

    Only a strong ETag equal to the object's matches: a weak one or a date never does
    (RFC 9110 13.1.5), so the client gets the whole current object, not a piece of a
    newer one spliced onto what it holds.
    """
    if header is None:
        return True
    header = header.strip()
    return etag is not None and header.startswith('"') and parse_if_range_header(header).etag == etag


def stored_object(client: gcs.Client, uri: str) -> gcs.Blob | None:
    """The object's metadata (size, content type, generation); None if it does not exist.

    The blob keeps the generation it was read at, so the reads of :func:`stream_bytes`
    ask Cloud Storage for that generation and never mix two versions of the object.
    """
    blob = storage.blob(client, uri)
    try:
        blob.reload()
    except NotFound:
        return None
    return blob


def stream_bytes(blob: gcs.Blob, start: int, stop: int) -> Iterator[bytes]:
    """Bytes ``start`` to ``stop`` (exclusive) of the object, fetched lazily in ranged
    reads of 1 MiB: the object, or the part asked for, is never held whole."""
    for first in range(start, stop, _STREAM_BYTES):
        # Checksums cover whole objects only; a ranged read cannot be checked against one.
        yield blob.download_as_bytes(start=first, end=min(first + _STREAM_BYTES, stop) - 1, checksum=None)
