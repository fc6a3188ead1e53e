"""The expiry sweep: a daemon thread in every api process removes expired resumable
uploads (their Cloud Storage session or object, then their row), one row at a time,
claimed with ``FOR UPDATE SKIP LOCKED`` so replicas never sweep the same upload."""

from __future__ import annotations

import logging

from google.cloud import storage as gcs
from sqlalchemy.engine import Engine

from services.api import tus_state
from services.api.objects import STORAGE_ERRORS
from services.api.tus import remove_upload_bytes
from shared.periodic import PeriodicThread

log = logging.getLogger(__name__)

_BATCH = 100


def sweep_expired(engine: Engine, client: gcs.Client, batch: int = _BATCH) -> int:
    """Remove up to ``batch`` expired uploads; returns how many went. An upload whose
    object storage would not delete stays for the next round."""
    removed = 0
    while removed < batch:
        with engine.begin() as conn:
            upload = tus_state.claim_expired(conn)
            if upload is None:
                break
            try:
                remove_upload_bytes(client, upload)
            except STORAGE_ERRORS as exc:
                log.warning(
                    "expired upload kept for the next sweep: %s", exc, extra={"upload_id": str(upload.id)}
                )
                break
            tus_state.delete(conn, upload.id)
        log.info("expired upload removed", extra={"upload_id": str(upload.id), "complete": upload.complete})
        removed += 1
    return removed


class UploadSweep(PeriodicThread):
    """Runs :func:`sweep_expired` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, engine: Engine, client: gcs.Client, interval: float) -> None:
        self.engine = engine
        self.client = client
        super().__init__("upload-sweep", interval, self.sweep)

    def sweep(self) -> None:
        """One round: expired uploads removed in batches until none is left."""
        while sweep_expired(self.engine, self.client) == _BATCH:
            pass
