"""``/tasks``: submit, list, get, download and delete the caller's tasks.

Every route needs a bearer token and sees only the caller's tasks: another user's task
is answered exactly like a missing one.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, get_args

from flask import Blueprint, Response, jsonify, redirect, request
from flask.typing import ResponseReturnValue
from pydantic import BaseModel, ConfigDict
from sqlalchemy.engine import Connection

from services.api import deps, queue
from services.api import tasks as task_store
from services.api.identity import current_owner
from services.api.objects import (
    STORAGE_ERRORS,
    RangeNotSatisfiable,
    delete_task_objects,
    download_name,
    entity_tag,
    if_range_matches,
    requested_part,
    signed_url,
    storage_unavailable,
    stored_object,
    stream_bytes,
)
from services.api.options import OPTION_FIELDS, TaskOptions, parse_options, parse_text_options
from services.api.tasks import IdempotencyKeyTaken, NewTask, StorageQuotaExceeded, Task, UnknownOwner
from services.api.tus_tasks import SubmitFinishedUpload, submit_finished_upload
from services.api.uploads import MULTIPART_OVERHEAD_BYTES, receive_upload
from shared import db, layout, ratelimit, storage, taskview
from shared.config import Settings
from shared.errors import (
    BadRequest,
    Conflict,
    DependencyUnavailable,
    NotFound,
    Unauthorized,
    Unprocessable,
    UnsupportedMediaType,
)
from shared.events import ClipFormat
from shared.logging import about_task, task_logger
from shared.outbox import publish_committed
from shared.urlpolicy import check_source_url
from shared.web import error_response, json_object, validated

log = task_logger(__name__)


def _about_the_task(view: Callable[..., ResponseReturnValue]) -> Callable[..., ResponseReturnValue]:
    """Tag the lines a view of ``/tasks/<task_id>...`` logs with its task (a path that
    names no task id leaves them untagged: the request ends in a 404)."""

    @functools.wraps(view)
    def tagged(task_id: str, **kwargs: str) -> ResponseReturnValue:
        try:
            named = uuid.UUID(task_id)
        except ValueError:
            named = None
        with about_task(named):
            return view(task_id, **kwargs)

    return tagged


tasks = Blueprint("tasks", __name__, url_prefix="/tasks")

# RFC 9110 token-ish: visible ASCII, bounded, so the key can be stored and compared as is.
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
_DIGITS = re.compile(r"^[0-9]{1,64}$")
CLIP_FORMATS: tuple[str, ...] = get_args(ClipFormat)
_CRASH_EXIT_CODE = 70


class SubmitByUrl(BaseModel):
    """The JSON body of a submission by URL, less its processing options
    (:mod:`services.api.options`); any other field is refused (422)."""

    model_config = ConfigDict(extra="forbid")

    url: str


def _not_found() -> NotFound:
    # One body for a missing task, a deleted one and another user's: nothing leaks.
    return NotFound("task not found", code="task_not_found")


def _task_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise _not_found() from None


def _reader() -> uuid.UUID:
    """The caller of a read route, counted against the per-user read limit (429 past it)."""
    owner = current_owner()
    ratelimit.hit(
        deps.engine(),
        f"tasks:read:{owner}",
        deps.settings().reads_per_minute_per_user,
        message="too many reads, slow down",
    )
    return owner


def _live_task(conn: Connection, raw_id: str, owner: uuid.UUID) -> Task:
    """The owner's task, unless deleted (404 for a missing, deleted or another user's)."""
    task = task_store.find_owned(conn, _task_id(raw_id), owner)
    if task is None or task.deleted_at is not None:
        raise _not_found()
    return task


def _owned_task(raw_id: str, owner: uuid.UUID) -> Task:
    with deps.engine().connect() as conn:
        return _live_task(conn, raw_id, owner)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _link(settings: Settings, path: str) -> str:
    return settings.public_base_url.rstrip("/") + path


def task_view(task: Task, settings: Settings) -> dict:
    """The task in full, as its owner sees it (:func:`shared.taskview.render_task`)."""
    return taskview.render_task(task, settings.public_base_url)


def _task_response(task: Task, status: int, **headers: str) -> Response:
    response = jsonify(task_view(task, deps.settings()))
    response.status_code = status
    response.headers["Location"] = _link(deps.settings(), f"/tasks/{task.id}")
    response.headers.update(headers)
    return response


# --- POST /tasks ---------------------------------------------------------------------------


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if not _IDEMPOTENCY_KEY.match(key):
        raise BadRequest(
            "Idempotency-Key must be 1 to 255 visible ASCII characters", code="invalid_idempotency_key"
        )
    return key


def _fingerprint(*parts: bytes) -> str:
    return hashlib.sha256(b"\n".join(parts)).hexdigest()


def _take_options(fields: dict) -> TaskOptions:
    """The processing options of a JSON body, removed from ``fields``."""
    return parse_options({name: fields.pop(name) for name in OPTION_FIELDS if name in fields})


def _check_form_options(fields: Mapping[str, Sequence[str]]) -> None:
    parse_text_options(fields)


def _find_by_key(owner: uuid.UUID, key: str | None) -> Task | None:
    if key is None:
        return None
    with deps.engine().connect() as conn:
        return task_store.find_by_idempotency_key(conn, owner, key, deps.settings().idempotency_window_hours)


def _replay(existing: Task, fingerprint: str | None) -> Response:
    """The answer to a retried submission: the original task, never a second one."""
    if existing.request_fingerprint != fingerprint:
        raise Unprocessable(
            "this Idempotency-Key was used with a different request", code="idempotency_key_mismatch"
        )
    if existing.deleted_at is None:
        with deps.engine().connect() as conn:
            task = task_store.find_owned(conn, existing.id, existing.owner_id)
        # The task may have been deleted since the key was looked up: the same answer.
        if task is not None and task.deleted_at is None:
            return _task_response(task, 200, **{"Idempotent-Replayed": "true"})
    raise Conflict("the task created with this Idempotency-Key was deleted", code="idempotency_key_used")


def _check_room(settings: Settings, owner: uuid.UUID, declared: int | None) -> None:
    """Refuse an upload before reading it when the owner has no room left, or when the
    declared body alone (less its multipart framing) cannot fit."""
    with deps.engine().connect() as conn:
        stored = task_store.stored_bytes(conn, owner)
    least = max(0, (declared or 0) - MULTIPART_OVERHEAD_BYTES)
    try:
        task_store.check_quota(stored, least, settings.max_stored_bytes_per_user)
    except StorageQuotaExceeded as exc:
        raise task_store.quota_exceeded(exc) from None


def _store(new: NewTask) -> tuple[Response, bool]:
    """Create the task and publish its TaskSubmitted; returns the response and whether
    a task was created (False: a concurrent request with the same key won). The lines
    logged on the way name the new task."""
    with about_task(new.id):
        return _store_new(new)


def _store_new(new: NewTask) -> tuple[Response, bool]:
    settings, engine = deps.settings(), deps.engine()
    try:
        with engine.begin() as conn:
            created = task_store.create(conn, new, settings)
    except StorageQuotaExceeded as exc:
        # A concurrent request with the same key may have taken the room: a retry, then.
        existing = _find_by_key(new.owner_id, new.idempotency_key)
        if existing is not None:
            return _replay(existing, new.request_fingerprint), False
        raise task_store.quota_exceeded(exc) from None
    except IdempotencyKeyTaken:
        existing = _find_by_key(new.owner_id, new.idempotency_key)
        if existing is None:
            raise Conflict(
                "a submission with this Idempotency-Key is in progress, retry", code="idempotency_key_in_use"
            ) from None
        return _replay(existing, new.request_fingerprint), False
    except UnknownOwner:
        raise Unauthorized("the token's user does not exist", code="unknown_user") from None
    log.info(
        "task queued" if created.dispatched else "task queued, held until a task of its owner ends",
        extra={"source_kind": new.source_kind},
    )

    if settings.fault_crash_after_commit and not settings.is_production:
        # Fault drill: die between the commit and the publish, as a killed process would.
        log.critical("fault injection: exiting after the commit, before the publish")
        os._exit(_CRASH_EXIT_CODE)

    # The answer shows the task as it was accepted: read before the publish, since a
    # worker that takes the task at once may have it processing by the time it is sent.
    with engine.connect() as conn:
        task = task_store.find_owned(conn, new.id, new.owner_id)
    if created.dispatched:
        publish_committed(engine, deps.publisher(), settings, [created.message])
    return _task_response(task, 202), True


@tasks.post("")
def submit():
    settings = deps.settings()
    owner = current_owner()
    key = _idempotency_key()
    ratelimit.hit(
        deps.engine(),
        f"tasks:submit:{owner}",
        settings.tasks_per_minute_per_user,
        message="too many submissions, slow down",
    )
    if request.mimetype == "multipart/form-data":
        return _submit_upload(settings, owner, key)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType('send JSON {"url": ...} or multipart/form-data with a "file" field')
    fields = json_object(max_bytes=settings.max_request_json_bytes)
    if "upload" in fields:
        return _submit_finished_upload(settings, owner, fields)
    options = _take_options(fields)
    body = validated(SubmitByUrl, fields)
    check_source_url(
        body.url, allow_loopback=settings.allow_loopback_sources, max_length=settings.max_url_length
    )
    fingerprint = _fingerprint(b"url", body.url.encode(), *options.fingerprint_parts())
    existing = _find_by_key(owner, key)
    if existing is not None:
        return _replay(existing, fingerprint)
    new = NewTask(
        id=uuid.uuid4(),
        owner_id=owner,
        source_kind="url",
        source=body.url,
        source_name=None,
        idempotency_key=key,
        request_fingerprint=fingerprint,
        spec=options.clip_spec(settings),
    )
    response, _ = _store(new)
    return response


def _submit_upload(settings: Settings, owner: uuid.UUID, key: str | None) -> Response:
    existing = _find_by_key(owner, key)
    if existing is None:
        _check_room(settings, owner, request.content_length)
    task_id = uuid.uuid4()
    upload = receive_upload(
        settings,
        task_id,
        store=existing is None,
        client=deps.storage(),
        text_fields=OPTION_FIELDS,
        check_fields=_check_form_options,
    )
    created = False
    try:
        options = parse_text_options(upload.fields)
        parts = options.fingerprint_parts()
        # Without options the fingerprint is the upload's own, as before options existed.
        fingerprint = _fingerprint(upload.fingerprint.encode(), *parts) if parts else upload.fingerprint
        if existing is not None:
            return _replay(existing, fingerprint)
        new = NewTask(
            id=task_id,
            owner_id=owner,
            source_kind="upload",
            source=upload.uri,
            source_name=upload.filename,
            idempotency_key=key,
            request_fingerprint=fingerprint,
            spec=options.clip_spec(settings),
            source_bytes=upload.size_bytes,
        )
        response, created = _store(new)
        return response
    finally:
        if not created and upload.uri is not None:
            _discard(upload.uri)


def _submit_finished_upload(settings: Settings, owner: uuid.UUID, fields: dict) -> Response:
    """``{"upload": id}``: a complete resumable upload (``/uploads``) becomes the task,
    with the options its creation carried."""
    given = [name for name in OPTION_FIELDS if name in fields]
    if given:
        raise Unprocessable(
            f"{given[0]}: a resumable upload's options are sent when it is created, in its Upload-Metadata",
            code="invalid_option",
        )
    task_id, status = submit_finished_upload(settings, owner, validated(SubmitFinishedUpload, fields))
    with deps.engine().connect() as conn:
        task = task_store.find_owned(conn, task_id, owner)
    return _task_response(task, status, **({"Idempotent-Replayed": "true"} if status == 200 else {}))


def _discard(uri: str) -> None:
    try:
        storage.delete_uri(deps.storage(), uri)
    except STORAGE_ERRORS as exc:
        log.warning("could not delete an unused upload %s: %s", uri, exc)


# --- GET /tasks ----------------------------------------------------------------------------


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not _DIGITS.match(raw):
        raise BadRequest(f"{name} must be a non-negative integer", code="invalid_parameter")
    digits = raw.lstrip("0") or "0"
    # Past nine digits the exact value no longer matters: it is over every cap.
    return int(digits) if len(digits) <= 9 else 10**9


_LIST_PARAMETERS = frozenset({"max", "order"})


@tasks.get("")
def list_tasks():
    settings = deps.settings()
    owner = _reader()
    unknown = sorted(set(request.args) - _LIST_PARAMETERS)
    if unknown:
        # A misspelt parameter (``limit``, ``sort``) would otherwise be silently ignored.
        raise BadRequest(
            f"unknown query parameter(s): {', '.join(unknown)[:200]}; use max and order",
            code="invalid_parameter",
        )
    limit = _int_arg("max", settings.list_default_max)
    if limit < 1:
        raise BadRequest("max must be at least 1", code="invalid_parameter")
    limit = min(limit, settings.list_cap_max)
    order = _int_arg("order", 1)
    if order not in (0, 1):
        raise BadRequest("order must be 0 (oldest first) or 1 (newest first)", code="invalid_parameter")
    with deps.engine().connect() as conn:
        items = task_store.list_owned(conn, owner, limit, newest_first=order == 1)
    return {
        "tasks": [
            {
                "id": str(item.id),
                "status": item.status.value,
                "progress": item.progress,
                "created_at": _iso(item.created_at),
                "updated_at": _iso(item.updated_at),
                "links": {"self": _link(settings, f"/tasks/{item.id}")},
            }
            for item in items
        ],
        "max": limit,
        "order": order,
    }


# --- GET and DELETE /tasks/<id> ---------------------------------------------------------------


@tasks.get("/<task_id>")
@_about_the_task
def get_task(task_id: str):
    owner = _reader()
    # The task and its place in line come from one snapshot, so they agree.
    with db.read_snapshot(deps.engine()) as conn:
        task = _live_task(conn, task_id, owner)
        place = queue.place_of(conn, task)
    view = task_view(task, deps.settings())
    if place is not None:
        view["queue"] = place.as_json()
    return view


@tasks.delete("/<task_id>")
@_about_the_task
def delete_task(task_id: str):
    settings, engine = deps.settings(), deps.engine()
    owner = current_owner()
    with engine.begin() as conn:
        task, messages = task_store.delete(conn, _task_id(task_id), owner, settings)
    if task is None:
        raise _not_found()
    if messages:
        log.info("task canceled by its owner")
        publish_committed(engine, deps.publisher(), settings, messages)
    # Also on a repeated DELETE: it finishes a cleanup an earlier call could not.
    try:
        deleted = delete_task_objects(settings, task.id, deps.storage())
    except STORAGE_ERRORS as exc:
        log.warning("objects of a deleted task not removed yet: %s", exc)
        raise DependencyUnavailable(
            "the task is deleted but its files could not be removed yet; repeat the DELETE"
        ) from None
    log.info("task deleted", extra={"objects_deleted": deleted})
    return Response(status=204)


# --- downloads -----------------------------------------------------------------------------


def _download(settings: Settings, uri: str, task_id: uuid.UUID, what: str) -> Response:
    """The object, or the one byte range the client asked for (206, or 416 past the end),
    streamed from storage; with signed URLs on, a redirect to a URL signed for this one
    download (one signature per download, none per read of the task)."""
    if settings.signed_urls:
        try:
            location = signed_url(storage.blob(deps.storage(), uri), settings.signed_url_minutes)
        except STORAGE_ERRORS as exc:
            raise storage_unavailable(exc) from None
        response = redirect(location, code=302)
        response.headers["Cache-Control"] = "private, no-store"
        return response
    try:
        blob = stored_object(deps.storage(), uri)
    except STORAGE_ERRORS as exc:
        raise storage_unavailable(exc) from None
    if blob is None:
        raise _file_not_found()
    etag = entity_tag(blob)
    honoured = if_range_matches(request.headers.get("If-Range"), etag)
    try:
        part = requested_part(request.range if honoured else None, blob.size)
    except RangeNotSatisfiable as exc:
        return error_response(
            exc.status, exc.code, exc.message, {"Content-Range": exc.content_range.to_header()}
        )
    start, stop = (0, blob.size) if part is None else (part.start, part.stop)
    response = Response(
        stream_bytes(blob, start, stop),
        status=200 if part is None else 206,
        mimetype=blob.content_type or "application/octet-stream",
    )
    response.headers["Content-Length"] = str(stop - start)
    if part is not None:
        response.content_range = part
    response.accept_ranges = "bytes"
    if etag is not None:
        response.set_etag(etag)
    filename = download_name(task_id, what, blob.content_type)
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Cache-Control"] = "private, no-store"
    return response


def _file_not_found() -> NotFound:
    return NotFound("file not found", code="file_not_found")


@tasks.get("/<task_id>/clips/<index>")
@_about_the_task
def download_clip(task_id: str, index: str):
    return _download_clip_object(task_id, index, "clip")


@tasks.get("/<task_id>/clips/<index>/poster")
@_about_the_task
def download_poster(task_id: str, index: str):
    return _download_clip_object(task_id, index, "poster")


@tasks.get("/<task_id>/clips/<index>/preview")
@_about_the_task
def download_preview(task_id: str, index: str):
    return _download_clip_object(task_id, index, "preview")


def _download_clip_object(task_id: str, index: str, what: Literal["clip", "poster", "preview"]):
    """One clip's file in the format the ``format`` query names (16:9 without one)."""
    settings = deps.settings()
    clip_format = request.args.get("format", layout.DEFAULT_FORMAT)
    if clip_format not in CLIP_FORMATS:
        raise BadRequest(f"format must be one of {', '.join(CLIP_FORMATS)}", code="invalid_parameter")
    owner = _reader()
    task = _owned_task(task_id, owner)
    wanted = int(index) if _DIGITS.match(index) and len(index) <= 9 else None
    clip = next((c for c in task.clips if c.index == wanted and c.format == clip_format), None)
    if clip is None:
        raise NotFound("clip not found", code="clip_not_found")
    uri = {"clip": clip.uri, "poster": clip.poster_uri, "preview": clip.preview_uri}[what]
    if uri is None:
        raise _file_not_found()
    if not layout.is_task_output(uri, settings.clips_bucket, task.id):
        # The notifier keeps such outputs out; a row that names one anyway is never served.
        log.error("refusing to serve a %s outside the task's folder: %s", what, uri)
        raise _file_not_found()
    name = f"{what}-{clip.index}"
    if clip.format != layout.DEFAULT_FORMAT:
        name += "-" + clip.format.replace(":", "x")
    return _download(settings, uri, task.id, name)


@tasks.get("/<task_id>/original")
@_about_the_task
def download_original(task_id: str):
    settings = deps.settings()
    owner = _reader()
    task = _owned_task(task_id, owner)
    if task.source_kind != "upload":
        raise _file_not_found()
    # Named from the task's id, never from a stored URI: only the task's own original.
    uri = storage.gs_uri(settings.uploads_bucket, layout.upload_object(task.id))
    return _download(settings, uri, task.id, "original")
