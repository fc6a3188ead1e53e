"""The Cloud Storage client and ``gs://`` URI helpers.

``google-cloud-storage`` talks to the emulator when ``STORAGE_EMULATOR_HOST`` is set.
"""

from __future__ import annotations

import contextlib
import os
from functools import lru_cache

from google.api_core.exceptions import Conflict, NotFound
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from shared.config import Settings


def create_client() -> storage.Client:
    """A new storage client (anonymous against the emulator). The api's app factory
    makes one for its app; the transcoder's entry point makes one for its worker."""
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        return storage.Client(
            project=os.environ.get("GOOGLE_CLOUD_PROJECT", "idrl-local"),
            credentials=AnonymousCredentials(),
        )
    return storage.Client()


@lru_cache(maxsize=1)
def storage_client() -> storage.Client:
    """A client shared by the callers that have no app to hold one: the notifier's
    function (one per instance, made at its first deletion), tools and tests."""
    return create_client()


def gs_uri(bucket: str, name: str) -> str:
    return f"gs://{bucket}/{name}"


def parse_gs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` -> ``("bucket", "a/b")``; ValueError for anything else."""
    if not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[len("gs://") :].partition("/")
    if not bucket or not name:
        raise ValueError(f"gs:// URI needs a bucket and an object name: {uri!r}")
    return bucket, name


def blob(client: storage.Client, uri: str) -> storage.Blob:
    bucket, name = parse_gs_uri(uri)
    return client.bucket(bucket).blob(name)


def delete_prefix(client: storage.Client, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix`` in ``bucket``; returns how many went."""
    deleted = 0
    for item in client.list_blobs(bucket, prefix=prefix):
        try:
            item.delete()
            deleted += 1
        except NotFound:
            pass  # deleted concurrently: the outcome is the same
    return deleted


def delete_uri(client: storage.Client, uri: str) -> bool:
    """Delete one object; False if it was already gone."""
    try:
        blob(client, uri).delete()
        return True
    except NotFound:
        return False


def ensure_buckets(settings: Settings, client: storage.Client | None = None) -> None:
    """Create the uploads and clips buckets if missing (local stack and tests)."""
    client = client or storage_client()
    for name in (settings.uploads_bucket, settings.clips_bucket):
        with contextlib.suppress(Conflict):
            client.create_bucket(name)


def delete_buckets(settings: Settings, client: storage.Client | None = None) -> None:
    """Empty and delete the buckets :func:`ensure_buckets` creates (tests and throwaway
    stacks); missing ones are skipped."""
    client = client or storage_client()
    for name in (settings.uploads_bucket, settings.clips_bucket):
        try:
            for item in client.list_blobs(name):
                item.delete()
            client.bucket(name).delete()
        except NotFound:
            pass
