"""The resumable-upload protocol's pure parts: Upload-Metadata and how a PATCH's bytes
are cut into Cloud Storage chunks and a durable tail (the session is a fake in memory)."""

from __future__ import annotations

import os

import pytest

from services.api import tus_session
from services.api.tus import parse_metadata
from services.api.tus_session import QUANTUM, SessionError, SessionWriter
from shared.errors import BadRequest


def test_metadata_pairs_decode_and_a_key_may_stand_alone():
    assert parse_metadata("filename cnVuLm1wNA==,filetype dmlkZW8vbXA0,private") == {
        "filename": "run.mp4",
        "filetype": "video/mp4",
        "private": "",
    }
    assert parse_metadata("") == {}


@pytest.mark.parametrize(
    "raw",
    [
        "filename cnVu,filename cnVu",
        "file name cnVu",
        "filename cnV",
        "filename !!!!",
        ",",
        "filename /w==",
        "a AA==",
    ],
)
def test_malformed_metadata_is_refused(raw):
    with pytest.raises(BadRequest):
        parse_metadata(raw)


def test_metadata_past_4_kib_is_refused():
    with pytest.raises(BadRequest, match="4096"):
        parse_metadata("k " + "QUFB" * 1025)


class FakeSession:
    """What a Cloud Storage session holds, and the chunks it was sent."""

    def __init__(self, held: bytes = b"") -> None:
        self.data = bytearray(held)
        self.chunks: list[tuple[int, int, int | None]] = []
        self.final = False

    def put(self, url: str, start: int, data: bytes, total: int | None) -> int:
        assert start == len(self.data) and not self.final
        if total is None:
            assert len(data) % QUANTUM == 0 and data
        self.data += data
        self.chunks.append((start, len(data), total))
        if total is not None:
            assert total == len(self.data)
            self.final = True
        return len(self.data)


@pytest.fixture
def session(monkeypatch) -> FakeSession:
    fake = FakeSession()
    monkeypatch.setattr(tus_session, "put_chunk", fake.put)
    return fake


def _writer(session: FakeSession, length: int, offset: int, tail: bytes, saved: list) -> SessionWriter:
    return SessionWriter(
        session_url="fake",
        length=length,
        offset=offset,
        tail=tail,
        held=len(session.data),
        chunk_bytes=2 * QUANTUM,
        save=lambda durable, kept: saved.append((durable, kept)),
    )


def test_patches_ending_anywhere_become_whole_chunks_and_a_tail_under_256_kib(session):
    content = os.urandom(5 * QUANTUM + 777)
    offset, tail, saved = 0, b"", []
    for size in (1000, QUANTUM, 3 * QUANTUM - 1000, 10, 5 * QUANTUM):
        writer = _writer(session, len(content), offset, tail, saved)
        writer.add(content[offset : offset + size])
        complete = writer.finish()
        offset, tail = saved[-1] if not complete else (len(content), b"")
        assert len(tail) < QUANTUM and offset == min(len(content), offset)
        assert bytes(session.data) + tail == content[:offset]
    assert complete and session.final and bytes(session.data) == content


def test_bytes_the_session_took_before_a_crash_are_not_sent_twice(session):
    content = os.urandom(4 * QUANTUM)
    # The row says offset 100 (all in the tail); the session already took 2 x 256 KiB.
    session.data += content[: 2 * QUANTUM]
    saved = []
    writer = _writer(session, len(content), 100, content[:100], saved)
    assert writer.offset == 100
    writer.add(content[100:])
    assert writer.finish()
    assert bytes(session.data) == content


def test_a_session_holding_less_than_recorded_is_an_error(session):
    with pytest.raises(SessionError):
        _writer(session, 10 * QUANTUM, 2 * QUANTUM + 5, b"x" * 5, [])
