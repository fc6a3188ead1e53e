"""The bytes of a resumable (tus) upload on their way into a Cloud Storage resumable
upload session, which any api replica can continue from what the database holds.

Cloud Storage takes a session's chunks in multiples of 256 KiB, except the last one.
:class:`SessionWriter` keeps what it receives in a buffer of at most one chunk
(``upload_chunk_bytes``) plus one read, sends each full chunk, and at the end of a PATCH
sends the largest 256 KiB multiple it has; the rest (the tail, under 256 KiB) goes to the
database with the offset. The offset recorded is always that of bytes Cloud Storage or
the database holds: a PATCH cut short never claims more.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import requests
from google.cloud import storage as gcs

from services.api.objects import STORAGE_ERRORS
from shared import storage

log = logging.getLogger(__name__)

QUANTUM = 256 * 1024  # Cloud Storage's chunk granularity
_TIMEOUT = (5, 120)
_RANGE = re.compile(r"^bytes=0-([0-9]+)$")

# Session URLs carry their own authorization: a plain HTTP session reaches them.
_http = requests.Session()


class SessionError(Exception):
    """Cloud Storage answered a session request in a way that leaves the upload unchanged."""


def start_session(client: gcs.Client, object_uri: str) -> str:
    """Open a resumable session for the object; returns its URL. The object exists only
    once the last byte arrives, and never replaces an existing one."""
    return storage.blob(client, object_uri).create_resumable_upload_session(
        content_type="application/octet-stream", if_generation_match=0, timeout=_TIMEOUT
    )


def _persisted(response: requests.Response) -> int:
    match = _RANGE.match(response.headers.get("Range", ""))
    if match is None:
        return 0
    held = int(match.group(1)) + 1
    # Whatever this api sends before the last chunk is a multiple of 256 KiB, so anything
    # else means nothing is held (the emulator answers "bytes=0-0" for an empty session).
    return held if held % QUANTUM == 0 else 0


def session_status(session_url: str, length: int) -> int:
    """How many bytes the session holds (``length`` when the object is complete)."""
    response = _http.put(session_url, headers={"Content-Range": "bytes */*"}, timeout=_TIMEOUT)
    if response.status_code in (200, 201):
        return length
    if response.status_code == 308:
        return _persisted(response)
    raise SessionError(f"session status answered {response.status_code}")


def put_chunk(session_url: str, start: int, data: bytes, total: int | None) -> int:
    """Send ``data`` at ``start``; the last chunk names the ``total``. Returns how many
    bytes the session holds afterwards."""
    end = f"{start}-{start + len(data) - 1}" if data else "*"
    size = "*" if total is None else str(total)
    response = _http.put(
        session_url, data=data, headers={"Content-Range": f"bytes {end}/{size}"}, timeout=_TIMEOUT
    )
    if response.status_code in (200, 201) and total is not None:
        return total
    if response.status_code == 308 and total is None:
        return _persisted(response)
    raise SessionError(f"chunk at {start} answered {response.status_code}: {response.text[:200]}")


def cancel_session(client: gcs.Client, session_url: str, object_uri: str) -> None:
    """End the session so it never becomes an object.

    Cloud Storage ends a session on DELETE (answering 499). Where that is not supported
    (the local emulator answers 404 or 405 and keeps the session), the session is
    finalized with what it holds and that object deleted. Failures are logged: an
    abandoned session expires on its own after a week and never becomes an object.
    """
    try:
        response = _http.delete(session_url, timeout=_TIMEOUT)
        if response.status_code in (204, 499):
            return
        held = session_status(session_url, -1)
        if held >= 0:
            put_chunk(session_url, held, b"", held)
        storage.delete_uri(client, object_uri)
    except (SessionError, *STORAGE_ERRORS) as exc:
        log.warning("could not end an upload session: %s", exc)


class SessionWriter:
    """One PATCH's bytes, from the durable offset on.

    ``held`` is what the session holds at the start; it may be more than the database
    says (a process killed after Cloud Storage took a chunk, before the commit): the
    bytes the client sends again up to ``held`` are then dropped, not sent twice.
    """

    def __init__(
        self,
        *,
        session_url: str,
        length: int,
        offset: int,
        tail: bytes,
        held: int,
        chunk_bytes: int,
        save: Callable[[int, bytes], None],
    ) -> None:
        self.session_url = session_url
        self.length = length
        self.chunk_bytes = chunk_bytes
        self.save = save
        tail_start = offset - len(tail)
        if held < tail_start:
            raise SessionError(f"the session holds {held} bytes, fewer than the {tail_start} recorded")
        self.sent = held
        self.skip = held - tail_start  # bytes of the tail and of the body the session holds
        self.buffer = bytearray()
        self.add(tail)

    @property
    def offset(self) -> int:
        """The position in the file the received bytes reach."""
        return self.sent - self.skip + len(self.buffer)

    @property
    def remaining(self) -> int:
        return self.length - self.offset

    def add(self, data: bytes) -> None:
        if self.skip:
            dropped = min(self.skip, len(data))
            self.skip -= dropped
            data = data[dropped:]
        self.buffer += data
        # A full chunk that ends the file waits for finish(), which sends it as the last.
        while len(self.buffer) > self.chunk_bytes or (
            len(self.buffer) == self.chunk_bytes and self.offset < self.length
        ):
            self._send(self.chunk_bytes)

    def _send(self, count: int) -> None:
        with memoryview(self.buffer) as view:  # one copy of the chunk, not two
            chunk = bytes(view[:count])
        held = put_chunk(self.session_url, self.sent, chunk, None)
        taken = held - self.sent
        if not 0 < taken <= count:
            raise SessionError(f"the session took {taken} of {count} bytes")
        del self.buffer[:taken]
        self.sent = held
        self.save(self.offset - len(self.buffer), b"")

    def finish(self) -> bool:
        """Make what was received durable; True when the upload is complete (the
        object then exists). Sends the last chunk, or every whole 256 KiB and saves the
        rest as the tail."""
        if self.skip == 0 and self.offset == self.length:
            put_chunk(self.session_url, self.sent, bytes(self.buffer), self.length)
            self.sent, self.buffer = self.length, bytearray()
            return True
        whole = len(self.buffer) // QUANTUM * QUANTUM
        if whole:
            self._send(whole)
        self.save(self.offset, bytes(self.buffer))
        return False
