"""Receiving an uploaded video: the multipart body is parsed as a stream and written to the
uploads bucket with a resumable upload, one chunk at a time.

The api never holds the file in memory or on its disk: at most one read from the socket,
the multipart parser's small buffer and one upload chunk (``upload_chunk_bytes``). The
first bytes decide whether the content is a video container (415 otherwise) before
anything is written; the byte count is checked as the body streams (413 past
``max_upload_bytes``), and an upload cut short is cancelled, so no partial object stays.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import threading
import unicodedata
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import filetype
from flask import request
from google.cloud import storage as gcs
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from services.api.objects import STORAGE_ERRORS, storage_unavailable
from shared import layout, storage
from shared.config import Settings
from shared.errors import (
    BadRequest,
    PayloadTooLarge,
    RequestTimeout,
    Unprocessable,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)

FILE_FIELD = "file"
# Boundaries and part headers around the file; a body larger than the file limit plus
# this is refused from its declared length alone.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
_READ_BYTES = 256 * 1024
SNIFF_BYTES = 8192  # filetype reads at most 8 KiB
_MAX_PARTS = 8
_MAX_FILENAME_CHARS = 255
# A text field beside the file (a processing option) is at most this long: far more than
# any valid value holds.
MAX_TEXT_FIELD_BYTES = 16 * 1024


@dataclass(frozen=True)
class ReceivedUpload:
    """An uploaded file: where it is stored (None when only fingerprinted), its name,
    size and fingerprint, and the text fields sent beside it (name -> values in order)."""

    uri: str | None
    filename: str
    size_bytes: int
    fingerprint: str
    fields: dict[str, list[str]] = field(default_factory=dict)


def video_container(head: bytes) -> str:
    """The media type of the video container ``head`` (a file's first bytes) starts;
    415 when it is not one. The content decides, never the name the client gave."""
    kind = filetype.guess(head[:SNIFF_BYTES])
    if kind is None or not kind.mime.startswith("video/"):
        raise UnsupportedMediaType(
            "the file is not a video container this platform reads "
            "(MP4, MOV, MKV, WebM, AVI, MPEG-PS, FLV, 3GP, WMV)",
            code="not_a_video",
        )
    return kind.mime


def clean_filename(raw: str) -> str:
    """The client's file name without any path and without control characters."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip()
    return name[:_MAX_FILENAME_CHARS] or "upload"


def check_declared_length(settings: Settings) -> None:
    """413 at once when the declared body length cannot hold an acceptable file."""
    limit = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"uploads are limited to {settings.max_upload_bytes} bytes")
    # Werkzeug's own limit stays above ours, so the client gets this service's message.
    request.max_content_length = limit


def receive_upload(
    settings: Settings,
    task_id: uuid.UUID,
    *,
    store: bool,
    client: gcs.Client,
    text_fields: Collection[str] = (),
    check_fields: Callable[[Mapping[str, Sequence[str]]], object] | None = None,
) -> ReceivedUpload:
    """Stream the request's multipart body; with ``store`` write its ``file`` part to
    the uploads bucket as the task's original, else only fingerprint it (an idempotent
    retry whose task already exists).

    Text fields named in ``text_fields`` are accepted beside the file (any other field is
    refused); ``check_fields`` sees the fields received so far each time one ends, so a
    bad value sent before the file stops the upload before a byte of it is stored.
    """
    boundary = request.mimetype_params.get("boundary", "")
    if not boundary or len(boundary) > 200:
        raise BadRequest("multipart body without a valid boundary", code="invalid_multipart")
    check_declared_length(settings)
    receiver = _FileReceiver(
        settings, task_id, store=store, client=client, text_fields=text_fields, check_fields=check_fields
    )
    decoder = MultipartDecoder(
        boundary.encode("latin-1"), max_form_memory_size=4 * _READ_BYTES, max_parts=_MAX_PARTS
    )
    with upload_deadline(settings.upload_timeout_seconds) as expired:
        try:
            while True:
                chunk = request.stream.read(_READ_BYTES)
                decoder.receive_data(chunk or None)
                _drain(decoder, receiver)
                if not chunk:
                    break
            if expired.is_set():
                raise RequestTimeout("the upload took too long")
            return receiver.finish()
        except BaseException as exc:
            receiver.abort()
            if expired.is_set() and not isinstance(exc, RequestTimeout):
                raise RequestTimeout(
                    f"the upload did not finish within {settings.upload_timeout_seconds:.0f} s"
                ) from None
            raise


@contextmanager
def upload_deadline(seconds: float) -> Iterator[threading.Event]:
    """Stop reading the client's socket once the whole upload has taken ``seconds``.

    The gateway only bounds the pause between two reads, so a client that trickles a
    byte every few seconds would otherwise hold this thread for ever. Shutting the
    socket's read side makes the blocked read return; the event tells why. Outside
    gunicorn (the test client) there is no socket and no deadline.
    """
    expired = threading.Event()
    client = request.environ.get("gunicorn.socket")
    if client is None:
        yield expired
        return

    def cut() -> None:
        expired.set()
        with contextlib.suppress(OSError):  # the client is already gone: nothing left to cut
            client.shutdown(socket.SHUT_RD)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield expired
    finally:
        timer.cancel()


def _drain(decoder: MultipartDecoder, receiver: _FileReceiver) -> None:
    try:
        event = decoder.next_event()
        while not isinstance(event, (NeedData, Epilogue)):
            if isinstance(event, File):
                receiver.begin_part(event.name, event.filename)
            elif isinstance(event, Field):
                receiver.begin_part(event.name, None)
            elif isinstance(event, Data):
                receiver.receive(event.data, more=event.more_data)
            event = decoder.next_event()
    except RequestEntityTooLarge:
        raise BadRequest(
            "multipart body has too many parts or oversized part headers", code="invalid_multipart"
        ) from None
    except ValueError:
        raise BadRequest("malformed multipart body", code="invalid_multipart") from None


class _FileReceiver:
    """The state of one upload: which part is streaming and where its bytes go."""

    def __init__(
        self,
        settings: Settings,
        task_id: uuid.UUID,
        *,
        store: bool,
        client: gcs.Client,
        text_fields: Collection[str],
        check_fields: Callable[[Mapping[str, Sequence[str]]], object] | None,
    ) -> None:
        self.settings = settings
        self.text_fields = frozenset(text_fields)
        self.check_fields = check_fields
        self.fields: dict[str, list[str]] = {}
        self.text_field: str | None = None
        self.text = bytearray()
        self.client = client
        self.uri = storage.gs_uri(settings.uploads_bucket, layout.upload_object(task_id)) if store else None
        self.filename: str | None = None
        self.in_file = False
        self.file_done = False
        self.size = 0
        self.head = bytearray()
        self.hash = hashlib.sha256()
        self.writer = None

    def begin_part(self, name: str, filename: str | None) -> None:
        self.text_field = None
        if filename is None and name in self.text_fields:
            self.text_field = name
            self.text.clear()
            return
        if name != FILE_FIELD:
            raise Unprocessable(
                f"{name}: may not be set; send only the field {FILE_FIELD!r}", code="field_not_allowed"
            )
        if filename is None:
            raise BadRequest(f"the field {FILE_FIELD!r} must be a file", code="missing_file")
        if self.filename is not None:
            raise Unprocessable("send one file per task", code="field_not_allowed")
        self.filename = clean_filename(filename)
        self.in_file = True

    def receive(self, data: bytes, *, more: bool) -> None:
        if self.text_field is not None:
            self._receive_text(data, more=more)
            return
        self.size += len(data)
        if self.size > self.settings.max_upload_bytes:
            raise PayloadTooLarge(f"uploads are limited to {self.settings.max_upload_bytes} bytes")
        self.hash.update(data)
        if self.writer is None and not self.file_done and len(self.head) < SNIFF_BYTES:
            self.head += data
            if len(self.head) >= SNIFF_BYTES or not more:
                self._start_writing()
        elif self.writer is not None:
            self._write(data)
        if not more:
            self.in_file = False
            self.file_done = True

    def _receive_text(self, data: bytes, *, more: bool) -> None:
        name = self.text_field or ""
        self.text += data
        if len(self.text) > MAX_TEXT_FIELD_BYTES:
            raise PayloadTooLarge(f"{name}: a form field holds at most {MAX_TEXT_FIELD_BYTES} bytes")
        if more:
            return
        try:
            value = self.text.decode("utf-8")
        except UnicodeDecodeError:
            raise BadRequest(f"{name}: the field is not UTF-8 text", code="invalid_option") from None
        self.fields.setdefault(name, []).append(value)
        self.text_field = None
        if self.check_fields is not None:
            self.check_fields(self.fields)

    def _start_writing(self) -> None:
        mime = video_container(bytes(self.head[:SNIFF_BYTES]))
        if self.uri is not None:
            try:
                self.writer = storage.blob(self.client, self.uri).open(
                    "wb",
                    chunk_size=self.settings.upload_chunk_bytes,
                    content_type=mime,
                    if_generation_match=0,  # a task's original is written once
                    ignore_flush=True,
                )
            except STORAGE_ERRORS as exc:
                raise storage_unavailable(exc) from None
        else:
            self.writer = _Discard()
        self._write(bytes(self.head))
        self.head.clear()

    def _write(self, data: bytes) -> None:
        try:
            self.writer.write(data)
        except STORAGE_ERRORS as exc:
            raise storage_unavailable(exc) from None

    def finish(self) -> ReceivedUpload:
        if self.filename is None:
            raise BadRequest(f"send the video in a multipart field named {FILE_FIELD!r}", code="missing_file")
        if self.in_file or not self.file_done:
            raise BadRequest("the multipart body ended inside the file", code="invalid_multipart")
        try:
            self.writer.close()  # the last chunk: the object exists only from here on
        except STORAGE_ERRORS as exc:
            raise storage_unavailable(exc) from None
        self.writer = None
        fingerprint = hashlib.sha256(
            b"upload\n" + self.filename.encode() + b"\n" + self.hash.digest()
        ).hexdigest()
        return ReceivedUpload(self.uri, self.filename, self.size, fingerprint, self.fields)

    def abort(self) -> None:
        """Cancel the resumable session; nothing was finalized, so no object remains."""
        if self.writer is None:
            return
        writer, self.writer = self.writer, None
        try:
            writer.terminate()
        except STORAGE_ERRORS as exc:
            # An abandoned session expires on its own; the object was never created.
            log.warning("could not cancel an upload session: %s", exc)


class _Discard:
    """Where an idempotent retry's bytes go: counted and hashed, then dropped."""

    def write(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        pass

    def terminate(self) -> None:
        pass
