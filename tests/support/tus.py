"""Helpers the resumable-upload (tus) tests share: the protocol's headers and metadata."""

from __future__ import annotations

import base64

TUS = {"Tus-Resumable": "1.0.0"}
OFFSET_STREAM = "application/offset+octet-stream"


def tus_metadata(**values: str) -> str:
    """An ``Upload-Metadata`` value: each key with its value in Base64."""
    return ",".join(f"{key} {base64.b64encode(value.encode()).decode()}" for key, value in values.items())


def patch_headers(offset: int, **extra: str) -> dict[str, str]:
    return TUS | {"Upload-Offset": str(offset), "Content-Type": OFFSET_STREAM} | extra


def sweep_every_upload(database_url: str) -> int:
    """Expire every resumable upload in the database and sweep them: no Cloud Storage
    session outlives the tests (the emulator refuses to delete a bucket with one pending)."""
    import sqlalchemy

    from services.api.tus_sweep import sweep_expired
    from shared.storage import storage_client
    from tests.support.db import expire_uploads

    engine = sqlalchemy.create_engine(database_url)
    try:
        expire_uploads(engine)
        removed = 0
        while True:
            count = sweep_expired(engine, storage_client())
            removed += count
            if count == 0:
                return removed
    finally:
        engine.dispose()
