"""Byte ranges on the download routes (local stack: the api streams from the emulator):
one range gives 206 with exactly those bytes, a range past the end 416, several ranges or
a malformed header the whole file; If-Range against the ETag; owner scoping unchanged."""

from __future__ import annotations

import os
import re
import uuid

import pytest
import requests
from werkzeug.datastructures import ContentRange
from werkzeug.http import parse_range_header

from services.api.objects import RangeNotSatisfiable, if_range_matches, requested_part
from services.api.openapi import SPEC
from shared import layout
from shared.storage import storage_client
from tests.support.api import assert_error, insert_tasks, multipart, store_processed
from tests.support.client import PlatformClient

MIB = 1024 * 1024
# Past two read chunks, so ranges cross the 1 MiB boundaries the route reads at.
CLIP_SIZE = 2 * MIB + 12345


def _processed_task(engine, settings, owner_id: uuid.UUID, content: bytes) -> tuple[uuid.UUID, str]:
    """A processed task with one clip (what the transcoder and the notifier leave); returns
    its id and the clip's object name."""
    [task_id] = insert_tasks(engine, owner_id, 1)
    store_processed(engine, settings, task_id, [content])
    return task_id, layout.clip_object(task_id, 0)


@pytest.fixture
def clip(engine, api_settings, alice) -> tuple[str, bytes, str]:
    """Alice's clip: its download path, the bytes stored, and its object name."""
    task_id, name = _processed_task(engine, api_settings, alice.id, os.urandom(CLIP_SIZE))
    stored = storage_client().bucket(api_settings.clips_bucket).blob(name).download_as_bytes()
    assert len(stored) == CLIP_SIZE
    return f"/tasks/{task_id}/clips/0", stored, name


def _whole(response, stored: bytes) -> None:
    assert response.status_code == 200, response.get_data(as_text=True)[:200]
    assert response.data == stored
    assert response.headers["Content-Length"] == str(len(stored))
    assert "Content-Range" not in response.headers
    assert response.headers["Accept-Ranges"] == "bytes"


# --- 206 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, first, last",
    [
        ("bytes=0-99", 0, 99),
        ("bytes=10-10", 10, 10),
        (f"bytes={MIB - 5}-{MIB + 5}", MIB - 5, MIB + 5),  # across a read boundary
        (f"bytes={MIB}-", MIB, CLIP_SIZE - 1),  # open-ended: what a player seeking sends
        ("bytes=0-", 0, CLIP_SIZE - 1),
        ("bytes=-500", CLIP_SIZE - 500, CLIP_SIZE - 1),  # suffix: the last 500 bytes
        (f"bytes=100-{CLIP_SIZE + 1000}", 100, CLIP_SIZE - 1),  # cut at the end
        (f"bytes=-{CLIP_SIZE + 1000}", 0, CLIP_SIZE - 1),  # a suffix longer than the file
    ],
)
def test_one_range_gets_206_with_exactly_those_bytes(client, alice, clip, header, first, last):
    path, stored, _ = clip
    whole = client.get(path, headers=alice.headers)
    response = client.get(path, headers=alice.headers | {"Range": header})

    assert response.status_code == 206, response.get_data(as_text=True)[:200]
    assert response.data == stored[first : last + 1]
    assert response.headers["Content-Range"] == f"bytes {first}-{last}/{CLIP_SIZE}"
    assert response.headers["Content-Length"] == str(last + 1 - first)
    for name in (
        "Content-Type",
        "Content-Disposition",
        "X-Content-Type-Options",
        "Cache-Control",
        "Accept-Ranges",
        "ETag",
    ):
        assert response.headers[name] == whole.headers[name], name
    assert response.headers["Content-Type"] == "video/mp4"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Accept-Ranges"] == "bytes"


def test_every_answer_names_its_etag_and_accepts_ranges(client, alice, clip, api_settings):
    path, stored, name = clip
    response = client.get(path, headers=alice.headers)
    _whole(response, stored)
    blob = storage_client().bucket(api_settings.clips_bucket).get_blob(name)
    assert response.headers["ETag"] == f'"{blob.generation}"'


def test_the_body_streams_in_reads_of_at_most_one_mib(client, alice, clip):
    path, stored, _ = clip
    # The part asked for arrives as it is read from storage, never as one piece.
    response = client.get(path, headers=alice.headers | {"Range": "bytes=100-"}, buffered=False)
    try:
        pieces = list(response.response)
    finally:
        response.close()
    assert [len(piece) for piece in pieces] == [MIB, MIB, CLIP_SIZE - 2 * MIB - 100]
    assert b"".join(pieces) == stored[100:]


def test_the_original_answers_ranges_too(client, alice, video_bytes):
    body, content_type = multipart(("file", "run.mp4", video_bytes))
    created = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers)
    assert created.status_code == 202, created.get_data(as_text=True)
    path = created.get_json()["links"]["original"]

    response = client.get(path, headers=alice.headers | {"Range": "bytes=-100"})
    assert response.status_code == 206
    assert response.data == video_bytes[-100:]
    size = len(video_bytes)
    assert response.headers["Content-Range"] == f"bytes {size - 100}-{size - 1}/{size}"
    task_id = created.get_json()["id"]
    assert response.headers["Content-Disposition"] == f'attachment; filename="{task_id}-original.mp4"'
    assert_error(
        client.get(path, headers=alice.headers | {"Range": f"bytes={size}-"}), 416, "range_not_satisfiable"
    )


# --- 416 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header", [f"bytes={CLIP_SIZE}-", f"bytes={CLIP_SIZE}-{CLIP_SIZE + 10}", f"bytes={CLIP_SIZE + 1}-"]
)
def test_a_range_starting_at_or_past_the_end_gets_416(client, alice, clip, header):
    path, _, _ = clip
    response = client.get(path, headers=alice.headers | {"Range": header})
    assert_error(response, 416, "range_not_satisfiable")
    assert response.headers["Content-Range"] == f"bytes */{CLIP_SIZE}"
    assert response.mimetype == "application/json"


# --- the whole file --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        "bytes=0-1,5-6",  # several ranges: Cloud Storage sends the whole object too
        "bytes=0-1, -5",
        "bytes=5-1",  # malformed: last before first
        "bytes=abc",
        "bytes=-0",
        "bytes=",
        "items=0-1",  # a unit other than bytes
        "0-1",
    ],
)
def test_several_ranges_or_a_malformed_header_get_the_whole_file(client, alice, clip, header):
    path, stored, _ = clip
    _whole(client.get(path, headers=alice.headers | {"Range": header}), stored)


def test_if_range_with_the_current_etag_gets_the_range(client, alice, clip):
    path, stored, _ = clip
    etag = client.get(path, headers=alice.headers).headers["ETag"]
    response = client.get(path, headers=alice.headers | {"Range": "bytes=1000-1999", "If-Range": etag})
    assert response.status_code == 206 and response.data == stored[1000:2000]
    # If-Range decides whether the range applies; a range past the end is still 416.
    past = client.get(path, headers=alice.headers | {"Range": f"bytes={CLIP_SIZE}-", "If-Range": etag})
    assert_error(past, 416, "range_not_satisfiable")


@pytest.mark.parametrize(
    "if_range", ['"1"', "W/{etag}", "{bare}", "Wed, 21 Oct 2015 07:28:00 GMT", "garbage"]
)
def test_if_range_that_does_not_match_gets_the_whole_file(client, alice, clip, if_range):
    path, stored, _ = clip
    etag = client.get(path, headers=alice.headers).headers["ETag"]
    # A weak or unquoted copy of the right tag does not match either: only a strong one does.
    header = if_range.format(etag=etag, bare=etag.strip('"'))
    _whole(client.get(path, headers=alice.headers | {"Range": "bytes=0-99", "If-Range": header}), stored)


def test_a_rewritten_clip_has_a_new_etag_and_an_old_if_range_gets_the_new_file(
    client, alice, clip, api_settings
):
    path, _, name = clip
    old_etag = client.get(path, headers=alice.headers).headers["ETag"]
    replacement = os.urandom(5000)
    storage_client().bucket(api_settings.clips_bucket).blob(name).upload_from_string(
        replacement, content_type="video/mp4"
    )

    response = client.get(path, headers=alice.headers | {"Range": "bytes=0-99", "If-Range": old_etag})
    _whole(response, replacement)
    assert response.headers["ETag"] != old_etag
    resumed = client.get(
        path, headers=alice.headers | {"Range": "bytes=0-99", "If-Range": response.headers["ETag"]}
    )
    assert resumed.status_code == 206 and resumed.data == replacement[:100]


# --- HEAD and owner scoping --------------------------------------------------------------------


@pytest.mark.parametrize("header", [None, "bytes=5-24"])
def test_head_answers_the_headers_of_get_without_a_body(client, alice, clip, header):
    path, _, _ = clip
    headers = alice.headers | ({"Range": header} if header else {})
    got, head = client.get(path, headers=headers), client.head(path, headers=headers)
    assert head.status_code == got.status_code == (206 if header else 200)
    assert head.data == b""
    assert dict(head.headers) == dict(got.headers)


def test_another_users_clip_with_a_range_is_answered_like_a_missing_task(
    client, engine, alice, bob, clip, api_settings, video_bytes
):
    path, _, _ = clip
    body, content_type = multipart(("file", "run.mp4", video_bytes))
    original = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers).get_json()[
        "links"
    ]["original"]
    ranged = {"Range": "bytes=0-9", "If-Range": client.get(path, headers=alice.headers).headers["ETag"]}
    missing = uuid.uuid4()
    for theirs_path, absent_path in (
        (path, f"/tasks/{missing}/clips/0"),
        (original, f"/tasks/{missing}/original"),
    ):
        for extra in ({"Range": "bytes=0-9"}, ranged, {"Range": f"bytes={CLIP_SIZE * 10}-"}):
            theirs = client.get(theirs_path, headers=bob.headers | extra)
            absent = client.get(absent_path, headers=bob.headers | extra)
            assert_error(theirs, 404, "task_not_found")
            assert theirs.get_json() == absent.get_json()
            assert "Content-Range" not in theirs.headers and "ETag" not in theirs.headers
            assert "Accept-Ranges" not in theirs.headers


# --- through the gateway -------------------------------------------------------------------------


def test_a_range_passes_through_the_gateway(local_stack, video_bytes):
    base = local_stack.base_url
    headers = PlatformClient.sign_up(base, "ranger").headers
    stored = video_bytes + os.urandom(MIB)
    body, content_type = multipart(("file", "run.mp4", stored))
    created = requests.post(
        f"{base}/tasks", data=body, timeout=30, headers=headers | {"Content-Type": content_type}
    )
    assert created.status_code == 202, created.text
    url = f"{base}{created.json()['links']['original']}"

    part = requests.get(url, headers=headers | {"Range": "bytes=1000-"}, timeout=30)
    assert part.status_code == 206 and part.content == stored[1000:]
    assert part.headers["Content-Range"] == f"bytes 1000-{len(stored) - 1}/{len(stored)}"
    assert part.headers["Accept-Ranges"] == "bytes" and part.headers["ETag"].startswith('"')
    several = requests.get(url, headers=headers | {"Range": "bytes=0-1,5-6"}, timeout=30)
    assert several.status_code == 200 and several.content == stored
    past = requests.get(url, headers=headers | {"Range": f"bytes={len(stored)}-"}, timeout=30)
    assert past.status_code == 416 and past.headers["Content-Range"] == f"bytes */{len(stored)}"
    assert past.json()["error"]["code"] == "range_not_satisfiable"


# --- the OpenAPI document ------------------------------------------------------------------------


def _ref(node: dict) -> dict:
    """``node``, or what its ``$ref`` (``#/components/...``) points at."""
    while "$ref" in node:
        target = SPEC
        for key in node["$ref"].removeprefix("#/").split("/"):
            target = target[key]
        node = target
    return node


def test_the_document_describes_what_the_download_routes_answer(client, alice, clip):
    path, _, _ = clip
    answers = {
        "200": client.get(path, headers=alice.headers | {"Range": "bytes=0-1,5-6"}),
        "206": client.get(path, headers=alice.headers | {"Range": "bytes=7-"}),
        "416": client.get(path, headers=alice.headers | {"Range": f"bytes={CLIP_SIZE}-"}),
    }
    for operation, query in (
        (SPEC["paths"]["/tasks/{task_id}/clips/{index}"]["get"], {"format"}),
        (SPEC["paths"]["/tasks/{task_id}/original"]["get"], set()),
    ):
        assert {_ref(p)["name"] for p in operation["parameters"]} == {"Range", "If-Range"} | query
        for status, answer in answers.items():
            assert answer.status_code == int(status)
            documented = _ref(operation["responses"][status])
            for name, header in documented["headers"].items():
                header = _ref(header)
                if header.get("required"):
                    value = answer.headers[name]
                    schema = header["schema"]
                    assert value in schema.get("enum", [value]), name
                    assert re.fullmatch(schema.get("pattern", ".*"), value), (name, value)
            assert answer.mimetype in {
                key.replace("*", answer.mimetype.split("/")[1]) for key in documented["content"]
            }


# --- the pure part -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "header, size, expected",
    [
        ("bytes=0-0", 1, ContentRange("bytes", 0, 1, 1)),
        ("bytes=-1", 1, ContentRange("bytes", 0, 1, 1)),
        ("bytes=3-", 10, ContentRange("bytes", 3, 10, 10)),
        ("bytes=0-1,3-4", 10, None),
        (None, 10, None),
    ],
)
def test_requested_part(header, size, expected):
    part = requested_part(parse_range_header(header), size)
    assert (part and part.to_header()) == (expected and expected.to_header())


@pytest.mark.parametrize("header, size", [("bytes=0-", 0), ("bytes=-5", 0), ("bytes=10-", 10)])
def test_requested_part_past_the_end(header, size):
    with pytest.raises(RangeNotSatisfiable) as raised:
        requested_part(parse_range_header(header), size)
    assert raised.value.content_range.to_header() == f"bytes */{size}"


@pytest.mark.parametrize(
    "header, etag, expected",
    [
        (None, "7", True),
        (None, None, True),
        ('"7"', "7", True),
        (' "7" ', "7", True),
        ('"8"', "7", False),
        ('W/"7"', "7", False),
        ("7", "7", False),
        ('"7"', None, False),
        ("Wed, 21 Oct 2015 07:28:00 GMT", "7", False),
    ],
)
def test_if_range_matches(header, etag, expected):
    assert if_range_matches(header, etag) is expected
