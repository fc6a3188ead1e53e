"""``/uploads``: resumable uploads (tus 1.0.0) with the creation, creation-with-upload,
termination and expiration extensions.

A client creates an upload (POST, with its length and metadata), sends its bytes in one
or more PATCHes from the offset a HEAD reports, and turns the finished upload into a task
with ``POST /tasks {"upload": "<id>"}``. Every request but OPTIONS needs the bearer token
and ``Tus-Resumable: 1.0.0``; another user's upload is answered exactly like a missing
one. The state lives in PostgreSQL (:mod:`services.api.tus_state`) and the bytes in a Cloud
Storage resumable session (:mod:`services.api.tus_session`), so any replica continues any
upload. Errors leave in the platform's error JSON.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import uuid
from datetime import datetime, timedelta

from flask import Blueprint, Response, request
from google.cloud import storage as gcs
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, SQLAlchemyError
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import http_date

from services.api import deps, tus_state
from services.api import tasks as task_store
from services.api.identity import current_owner
from services.api.objects import STORAGE_ERRORS, storage_unavailable
from services.api.options import options_from_metadata
from services.api.tus_session import SessionError, SessionWriter, session_status, start_session
from services.api.tus_session import cancel_session as end_session
from services.api.uploads import clean_filename, upload_deadline
from shared import db, layout, storage
from shared.config import Settings
from shared.errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    RequestTimeout,
    Unauthorized,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

tus = Blueprint("tus", __name__, url_prefix="/uploads")

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,termination,expiration"
OFFSET_STREAM = "application/offset+octet-stream"
MAX_METADATA_BYTES = 4096
_READ_BYTES = 256 * 1024
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_METADATA_KEY = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,128}$")  # visible ASCII but the comma
# What a browser client on another allowed origin may send and read.
_CORS_REQUEST_HEADERS = (
    "Authorization, Content-Type, Tus-Resumable, Upload-Length, Upload-Metadata, Upload-Offset, "
    "Upload-Defer-Length, Upload-Concat, X-Requested-With, X-HTTP-Method-Override"
)
_CORS_EXPOSED_HEADERS = (
    "Location, Tus-Resumable, Tus-Version, Tus-Extension, Tus-Max-Size, Upload-Offset, "
    "Upload-Length, Upload-Metadata, Upload-Expires"
)
_SQLSTATE_FOREIGN_KEY = "23503"


def _settings() -> Settings:
    return deps.settings()


def _engine():
    return deps.engine()


def _expiry(settings: Settings) -> timedelta:
    return timedelta(hours=settings.tus_upload_expiry_hours)


def _not_found() -> NotFound:
    # One answer for a missing, an expired and another user's upload: nothing leaks.
    return NotFound("upload not found", code="upload_not_found")


# --- protocol headers (pure) -------------------------------------------------------------


def parse_metadata(raw: str) -> dict[str, str]:
    """``Upload-Metadata`` as a dict of decoded values (400 when malformed or too long).

    Pairs are ``key base64value`` separated by commas; keys are unique visible ASCII
    without commas; a value may be left out (an empty value).
    """
    if len(raw.encode("latin-1", "replace")) > MAX_METADATA_BYTES:
        raise BadRequest(f"Upload-Metadata is limited to {MAX_METADATA_BYTES} bytes", code="invalid_metadata")
    found: dict[str, str] = {}
    if not raw.strip():
        return found
    for pair in raw.split(","):
        key, _, value = pair.strip().partition(" ")
        if not _METADATA_KEY.match(key) or key in found or " " in value:
            raise BadRequest(
                "Upload-Metadata must be comma-separated pairs of a unique key and a Base64 value",
                code="invalid_metadata",
            )
        try:
            found[key] = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise BadRequest(
                f"Upload-Metadata: the value of {key!r} is not Base64 of UTF-8 text", code="invalid_metadata"
            ) from None
        if "\x00" in found[key]:
            raise BadRequest(f"Upload-Metadata: the value of {key!r} holds a NUL", code="invalid_metadata")
    return found


def _header_number(name: str) -> int:
    raw = request.headers.get(name)
    if raw is None:
        raise BadRequest(f"send the {name} header", code=f"missing_{name.lower().replace('-', '_')}")
    if not _DIGITS.match(raw.strip()):
        raise BadRequest(
            f"{name} must be a non-negative integer", code=f"invalid_{name.lower().replace('-', '_')}"
        )
    return int(raw)


def _upload_length(settings: Settings) -> int:
    if "Upload-Defer-Length" in request.headers:
        raise BadRequest(
            "Upload-Defer-Length is not supported: send Upload-Length", code="invalid_upload_length"
        )
    length = _header_number("Upload-Length")
    if length == 0:
        raise BadRequest("Upload-Length must be at least 1 byte", code="invalid_upload_length")
    if length > settings.max_upload_bytes:
        raise PayloadTooLarge(f"uploads are limited to {settings.max_upload_bytes} bytes")
    return length


def _upload_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _not_found() from None


def _upload_headers(
    response: Response, *, offset: int, expires_at: datetime, length: int | None = None
) -> Response:
    response.headers["Upload-Offset"] = str(offset)
    response.headers["Upload-Expires"] = http_date(expires_at)
    if length is not None:
        response.headers["Upload-Length"] = str(length)
    return response


@tus.before_request
def _check_version() -> None:
    if request.method == "OPTIONS":
        return
    version = request.headers.get("Tus-Resumable")
    if version is None:
        raise BadRequest(f"send Tus-Resumable: {TUS_VERSION} (tus 1.0.0)", code="missing_tus_resumable")
    if version != TUS_VERSION:
        raise PreconditionFailed(
            f"this server speaks tus {TUS_VERSION}: send Tus-Resumable: {TUS_VERSION}",
            code="tus_version_unsupported",
        )


@tus.after_request
def _protocol_headers(response: Response) -> Response:
    response.headers["Tus-Resumable"] = TUS_VERSION
    if request.method == "OPTIONS" or response.status_code == 412:
        response.headers["Tus-Version"] = TUS_VERSION
    origin = request.headers.get("Origin")
    allowed = {o.strip().rstrip("/") for o in _settings().tus_cors_origins.split(",") if o.strip()}
    if origin and origin in allowed:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = _CORS_EXPOSED_HEADERS
        if request.method == "OPTIONS":
            response.headers["Access-Control-Allow-Methods"] = "POST, HEAD, PATCH, DELETE, OPTIONS"
            response.headers["Access-Control-Allow-Headers"] = _CORS_REQUEST_HEADERS
            response.headers["Access-Control-Max-Age"] = "600"
    response.vary.add("Origin")
    return response


# --- OPTIONS -------------------------------------------------------------------------------


def _capabilities() -> Response:
    response = Response(status=204)
    response.headers["Tus-Extension"] = TUS_EXTENSIONS
    response.headers["Tus-Max-Size"] = str(_settings().max_upload_bytes)
    return response


tus.add_url_rule("", "capabilities", _capabilities, methods=["OPTIONS"])
tus.add_url_rule(
    "/<upload_id>", "upload_capabilities", lambda upload_id: _capabilities(), methods=["OPTIONS"]
)


# --- POST: creation (and creation-with-upload) ----------------------------------------------


@tus.post("", provide_automatic_options=False)
def create_upload():
    settings, engine = _settings(), _engine()
    owner = current_owner()
    length = _upload_length(settings)
    raw_metadata = request.headers.get("Upload-Metadata", "")
    metadata = parse_metadata(raw_metadata)
    # The task's options travel in the metadata: a bad one is refused before any byte.
    options_from_metadata(metadata)
    with_body = request.mimetype == OFFSET_STREAM
    if not with_body and (request.content_length or 0) > 0:
        raise UnsupportedMediaType(f"bytes sent with the creation need Content-Type: {OFFSET_STREAM}")
    if with_body and (request.content_length or 0) > length:
        raise PayloadTooLarge("the body runs past the Upload-Length", code="past_upload_length")
    upload_id = uuid.uuid4()
    uri = storage.gs_uri(settings.uploads_bucket, layout.upload_object(upload_id))
    with engine.begin() as conn:
        try:
            task_store.check_quota(
                task_store.stored_bytes(conn, owner), length, settings.max_stored_bytes_per_user
            )
        except task_store.StorageQuotaExceeded as exc:
            raise task_store.quota_exceeded(exc) from None
        if tus_state.uploads_in_progress(conn, owner) >= settings.tus_max_uploads_in_progress:
            raise RateLimited(
                f"at most {settings.tus_max_uploads_in_progress} uploads may be in progress at once: "
                "finish or DELETE one",
                retry_after=60,
                code="too_many_uploads",
            )
        try:
            session_url = start_session(deps.storage(), uri)
        except STORAGE_ERRORS as exc:
            raise storage_unavailable(exc) from None
        new = tus_state.NewUpload(
            id=upload_id,
            owner_id=owner,
            upload_length=length,
            session_url=session_url,
            object_uri=uri,
            metadata=raw_metadata,
            filename=clean_filename(metadata["filename"]) if metadata.get("filename") else None,
        )
        try:
            with conn.begin_nested():
                _, expires_at = tus_state.create(conn, new, _expiry(settings))
        except DBAPIError as exc:
            end_session(deps.storage(), session_url, uri)
            if db.sqlstate(exc) == _SQLSTATE_FOREIGN_KEY:
                raise Unauthorized("the token's user does not exist", code="unknown_user") from None
            raise
    log.info("upload created", extra={"upload_id": str(upload_id), "upload_length": length})
    response = Response(status=201)
    response.headers["Location"] = settings.public_base_url.rstrip("/") + f"/uploads/{upload_id}"
    offset = 0
    if with_body:
        offset, expires_at = _receive(settings, upload_id, owner, offset=0)
    return _upload_headers(response, offset=offset, expires_at=expires_at)


# --- HEAD ----------------------------------------------------------------------------------


def _owned(upload_id: str, owner: uuid.UUID) -> tus_state.TusUpload:
    with _engine().connect() as conn:
        upload = tus_state.find_owned(conn, _upload_id(upload_id), owner)
    if upload is None:
        raise _not_found()
    return upload


@tus.route("/<upload_id>", methods=["HEAD"], provide_automatic_options=False)
def upload_status(upload_id: str):
    upload = _owned(upload_id, current_owner())
    response = Response(status=200)
    response.headers["Cache-Control"] = "no-store"
    if upload.metadata:
        response.headers["Upload-Metadata"] = upload.metadata
    return _upload_headers(
        response, offset=upload.upload_offset, expires_at=upload.expires_at, length=upload.upload_length
    )


# --- PATCH ---------------------------------------------------------------------------------


@tus.patch("/<upload_id>", provide_automatic_options=False)
def append(upload_id: str):
    settings = _settings()
    owner = current_owner()
    upload = _owned(upload_id, owner)
    if request.mimetype != OFFSET_STREAM:
        raise UnsupportedMediaType(
            f"send the bytes as Content-Type: {OFFSET_STREAM}", code="invalid_content_type"
        )
    offset = _header_number("Upload-Offset")
    offset, expires_at = _receive(settings, upload.id, owner, offset=offset)
    return _upload_headers(Response(status=204), offset=offset, expires_at=expires_at)


def _receive(
    settings: Settings, upload_id: uuid.UUID, owner: uuid.UUID, *, offset: int
) -> tuple[int, datetime]:
    """Stream the request body into the upload from ``offset`` under its lock; returns
    the durable offset and the expiry."""
    # The body may be as large as the file; werkzeug's default limit is the JSON one.
    request.max_content_length = settings.max_upload_bytes + 1
    with _engine().connect() as conn:
        upload = tus_state.find_owned(conn, upload_id, owner)
        if upload is None:
            raise _not_found()
        locked = tus_state.try_lock(conn, upload)
        conn.commit()
        if not locked:
            raise Conflict("another request is writing to this upload", code="upload_locked")
        try:
            return _receive_locked(settings, conn, upload_id, owner, offset)
        finally:
            _release(conn, upload)


def _release(conn: Connection, upload: tus_state.TusUpload) -> None:
    try:
        conn.rollback()
        tus_state.unlock(conn, upload)
        conn.commit()
    except SQLAlchemyError as exc:
        # A broken connection took the lock with it; never return it to the pool.
        log.warning("could not release an upload lock: %s", exc, extra={"upload_id": str(upload.id)})
        conn.invalidate()


def _receive_locked(
    settings: Settings, conn: Connection, upload_id: uuid.UUID, owner: uuid.UUID, offset: int
) -> tuple[int, datetime]:
    upload = tus_state.find_owned(conn, upload_id, owner)  # as the last writer left it
    conn.commit()
    if upload is None:
        raise _not_found()
    if upload.complete:
        raise Conflict("the upload is complete: submit it with POST /tasks", code="upload_complete")
    if offset != upload.upload_offset:
        raise Conflict(
            f"Upload-Offset must be the upload's current offset, {upload.upload_offset}",
            code="upload_offset_mismatch",
        )
    declared = request.content_length
    if declared is not None and offset + declared > upload.upload_length:
        raise PayloadTooLarge(
            f"the body runs past the upload's length ({upload.upload_length} bytes)",
            code="past_upload_length",
        )
    try:
        held = session_status(upload.session_url, upload.upload_length)
    except (SessionError, *STORAGE_ERRORS) as exc:
        raise storage_unavailable(exc) from None
    if held == upload.upload_length:
        # Cloud Storage finished the object before the process that sent the last chunk
        # could record it.
        return upload.upload_length, _complete(settings, conn, upload)

    def save(durable: int, tail: bytes) -> None:
        tus_state.save_progress(conn, upload.id, durable, tail)
        conn.commit()

    try:
        writer = SessionWriter(
            session_url=upload.session_url,
            length=upload.upload_length,
            offset=upload.upload_offset,
            tail=upload.tail,
            held=held,
            chunk_bytes=settings.upload_chunk_bytes,
            save=save,
        )
    except SessionError as exc:
        raise storage_unavailable(exc) from None
    past_length = cut = False
    with upload_deadline(settings.upload_timeout_seconds) as expired:
        try:
            while writer.remaining > 0:
                data = request.stream.read(min(_READ_BYTES, writer.remaining))
                if not data:
                    break
                writer.add(data)
            past_length = declared is None and bool(request.stream.read(1))
        except (ClientDisconnected, OSError):
            cut = True  # what arrived is kept: the client resumes from the offset
        except (SessionError, *STORAGE_ERRORS) as exc:
            raise storage_unavailable(exc) from None
        try:
            complete = writer.finish()
        except (SessionError, *STORAGE_ERRORS) as exc:
            raise storage_unavailable(exc) from None
    expires_at = _complete(settings, conn, upload) if complete else upload.expires_at
    log.info(
        "upload received",
        extra={"upload_id": str(upload.id), "upload_offset": writer.offset, "complete": complete, "cut": cut},
    )
    if expired.is_set():
        raise RequestTimeout(f"the PATCH did not finish within {settings.upload_timeout_seconds:.0f} s")
    if past_length:
        raise PayloadTooLarge(
            f"the body ran past the upload's length ({upload.upload_length} bytes)", code="past_upload_length"
        )
    if cut:
        raise BadRequest("the body ended before its declared length", code="incomplete_body")
    return writer.offset, expires_at


def _complete(settings: Settings, conn: Connection, upload: tus_state.TusUpload) -> datetime:
    expires_at = tus_state.mark_complete(conn, upload.id, _expiry(settings))
    conn.commit()
    log.info("upload complete", extra={"upload_id": str(upload.id)})
    return expires_at


# --- DELETE (termination) ------------------------------------------------------------------


@tus.delete("/<upload_id>", provide_automatic_options=False)
def terminate(upload_id: str):
    owner = current_owner()
    upload = _owned(upload_id, owner)
    with _engine().begin() as conn:
        if not tus_state.try_xact_lock(conn, upload):
            raise Conflict("another request is writing to this upload", code="upload_locked")
        locked = tus_state.find_owned(conn, upload.id, owner, for_update=True)
        if locked is None:
            raise _not_found()
        upload = locked
        try:
            remove_upload_bytes(deps.storage(), upload)
        except STORAGE_ERRORS as exc:
            raise storage_unavailable(exc) from None
        tus_state.delete(conn, upload.id)
    log.info("upload terminated", extra={"upload_id": str(upload.id)})
    return Response(status=204)


def remove_upload_bytes(client: gcs.Client, upload: tus_state.TusUpload) -> None:
    """End the upload's session, or delete its object once complete. Raises one of
    :data:`STORAGE_ERRORS` when the object cannot be deleted."""
    if upload.complete:
        storage.delete_uri(client, upload.object_uri)
    else:
        end_session(client, upload.session_url, upload.object_uri)
