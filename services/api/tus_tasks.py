"""A finished resumable upload becomes a task: ``POST /tasks {"upload": "<id>"}``.

The task takes the upload's id, so its original sits where a multipart upload's would
(``uploads/<task id>/source``) and a second submission of the same upload finds the same
task (200) instead of making another. The upload's row goes in the transaction that
creates the task.
"""

from __future__ import annotations

import logging
import uuid

from pydantic import BaseModel, ConfigDict

from services.api import deps, tus_state
from services.api import tasks as task_store
from services.api.objects import STORAGE_ERRORS, storage_unavailable
from services.api.options import options_from_metadata
from services.api.tasks import NewTask, UnknownOwner
from services.api.tus import parse_metadata
from services.api.uploads import SNIFF_BYTES, video_container
from shared import storage
from shared.config import Settings
from shared.errors import Conflict, NotFound, Unauthorized
from shared.outbox import publish_committed

log = logging.getLogger(__name__)


class SubmitFinishedUpload(BaseModel):
    """The JSON body that turns a finished resumable upload into a task."""

    model_config = ConfigDict(extra="forbid")

    upload: str


def _not_found() -> NotFound:
    return NotFound("upload not found", code="upload_not_found")


def submit_finished_upload(
    settings: Settings, owner: uuid.UUID, body: SubmitFinishedUpload
) -> tuple[uuid.UUID, int]:
    """Create the task of the owner's complete upload; returns the task id and the status
    to answer (202 created, 200 when the upload was submitted before)."""
    try:
        upload_id = uuid.UUID(body.upload)
    except ValueError:
        raise _not_found() from None
    engine = deps.engine()
    with engine.begin() as conn:
        upload = tus_state.find_owned(conn, upload_id, owner, for_update=True)
        if upload is None:
            existing = task_store.find_owned(conn, upload_id, owner, with_clips=False)
            if existing is not None and existing.source_kind == "upload" and existing.deleted_at is None:
                return existing.id, 200
            raise _not_found()
        if not upload.complete or not tus_state.try_xact_lock(conn, upload):
            raise Conflict(
                f"the upload holds {upload.upload_offset} of {upload.upload_length} bytes: finish it first",
                code="upload_incomplete",
            )
        blob = storage.blob(deps.storage(), upload.object_uri)
        try:
            head = blob.download_as_bytes(start=0, end=SNIFF_BYTES - 1, checksum=None)
        except STORAGE_ERRORS as exc:
            raise storage_unavailable(exc) from None
        mime = video_container(head)
        try:
            blob.content_type = mime
            blob.patch()
        except STORAGE_ERRORS as exc:
            raise storage_unavailable(exc) from None
        new = NewTask(
            id=upload.id,
            owner_id=owner,
            source_kind="upload",
            source=upload.object_uri,
            source_name=upload.filename or "upload",
            idempotency_key=None,
            request_fingerprint=None,
            # Checked when the upload was created; the settings in force now apply.
            spec=options_from_metadata(parse_metadata(upload.metadata)).clip_spec(settings),
            source_bytes=upload.upload_length,
        )
        try:
            created = task_store.create(conn, new, settings)
        except UnknownOwner:
            raise Unauthorized("the token's user does not exist", code="unknown_user") from None
        except task_store.StorageQuotaExceeded as exc:
            raise task_store.quota_exceeded(exc) from None
        tus_state.delete(conn, upload.id)
    log.info(
        "task queued" if created.dispatched else "task queued, held until a task of its owner ends",
        extra={"task_id": str(new.id), "source_kind": "upload", "resumable": True},
    )
    if created.dispatched:
        publish_committed(engine, deps.publisher(), settings, [created.message])
    return new.id, 202
