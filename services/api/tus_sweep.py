"""The expiry sweep: a daemon thread in every api process removes expired resumable
uploads (their Cloud Storage session or object, then their row), one row at a time,
claimed with ``FOR UPDATE SKIP LOCKED`` so replicas never sweep the same upload."""

from __future__ import annotations

import logging
import threading

from google.cloud import storage as gcs
from sqlalchemy.engine import Engine

from services.api import tus_state
from services.api.objects import STORAGE_ERRORS
from services.api.tus import remove_upload_bytes

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


class UploadSweep:
    """Runs :func:`sweep_expired` every ``interval`` seconds until :meth:`stop`."""

    def __init__(self, engine: Engine, client: gcs.Client, interval: float) -> None:
        self.engine = engine
        self.client = client
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None and self.interval > 0:
            self._thread = threading.Thread(target=self.run, name="upload-sweep", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                while sweep_expired(self.engine, self.client) == _BATCH:
                    pass
            except Exception:  # noqa: BLE001 - a sweep that stops would keep expired uploads forever
                log.exception("upload sweep failed; retrying next round")
