"""Processing options on every way in (JSON, multipart, tus): stored in the task's spec,
carried by its TaskSubmitted, shown by GET /tasks/<id>, refused with the design's errors,
and part of the idempotency fingerprint."""

from __future__ import annotations

import json
import uuid

import pytest

from services.api.uploads import MAX_TEXT_FIELD_BYTES
from shared.events import CardText, ClipSpec, FormatSpec, LoudnessSpec, TaskSubmitted
from shared.storage import storage_client
from shared.tables import outbox, tasks, tus_uploads
from tests.support.api import assert_error, multipart, object_names, pull_events
from tests.support.db import count_rows, task_row
from tests.support.tus import OFFSET_STREAM, TUS, tus_metadata

SOURCE = "https://videos.league.example/runs/run-options.mp4"
OPTIONS = {
    "formats": ["16:9", {"format": "9:16", "fit": "crop"}],
    "loudness": "off",
    "card": {"title": "Ana Díaz #12", "subtitle": "Slalom\n3 May 2026"},
    "split": "scenes",
}
SPEC = ClipSpec(
    formats=(FormatSpec(format="16:9"), FormatSpec(format="9:16", fit="crop")),
    loudness=None,
    card=CardText(title="Ana Díaz #12", subtitle="Slalom\n3 May 2026"),
    split="scenes",
)
SHOWN = {
    "formats": [{"format": "16:9", "fit": "pad"}, {"format": "9:16", "fit": "crop"}],
    "loudness": "off",
    "card": {"title": "Ana Díaz #12", "subtitle": "Slalom\n3 May 2026"},
    "split": "scenes",
}


def _submitted(settings, task_id: uuid.UUID) -> TaskSubmitted:
    [event] = pull_events(settings, settings.subscription_transcoder, task_id=task_id)
    assert isinstance(event, TaskSubmitted)
    return event


def _assert_carried(client, engine, settings, user, task_id: uuid.UUID, spec: ClipSpec, shown: dict) -> None:
    assert ClipSpec.model_validate(task_row(engine, task_id)["spec"]) == spec
    assert _submitted(settings, task_id).spec == spec
    read = client.get(f"/tasks/{task_id}", headers=user.headers)
    assert read.status_code == 200 and read.get_json()["options"] == shown


# --- JSON ----------------------------------------------------------------------------------


def test_json_options_reach_the_row_the_message_and_the_read(client, engine, alice, api_settings):
    response = client.post("/tasks", json={"url": SOURCE, **OPTIONS}, headers=alice.headers)

    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.get_json()["options"] == SHOWN
    _assert_carried(client, engine, api_settings, alice, uuid.UUID(response.get_json()["id"]), SPEC, SHOWN)


def test_the_seeds_plain_url_gets_todays_clip_with_the_platforms_loudness(
    make_app, api_settings, engine, alice
):
    settings = api_settings.model_copy(
        update={"loudness_target_lufs": -16.0, "loudness_true_peak_dbtp": -1.5}
    )
    client = make_app(settings).test_client()
    response = client.post("/tasks", json={"url": SOURCE}, headers=alice.headers)

    assert response.status_code == 202, response.get_data(as_text=True)
    loudness = LoudnessSpec(target_lufs=-16.0, true_peak_dbtp=-1.5)
    shown = {
        "formats": [{"format": "16:9", "fit": "pad"}],
        "loudness": {"target_lufs": -16.0, "true_peak_dbtp": -1.5},
        "card": None,
        "split": "fixed",
    }
    task_id = uuid.UUID(response.get_json()["id"])
    _assert_carried(client, engine, settings, alice, task_id, ClipSpec(loudness=loudness), shown)


@pytest.mark.parametrize(
    "options, status, code, field",
    [
        ({"formats": "9:16"}, 400, "invalid_option", "formats"),
        ({"formats": []}, 422, "invalid_option", "formats"),
        ({"formats": ["4:3"]}, 422, "invalid_option", "formats[0]"),
        ({"formats": ["9:16", "9:16"]}, 422, "invalid_option", "formats"),
        ({"formats": [{"format": "1:1", "fit": "stretch"}]}, 422, "invalid_option", "formats[0].fit"),
        ({"loudness": False}, 400, "invalid_option", "loudness"),
        ({"loudness": "-23"}, 422, "invalid_option", "loudness"),
        ({"card": "Ana"}, 400, "invalid_option", "card"),
        ({"card": {}}, 422, "invalid_option", "card"),
        ({"card": {"title": "x" * 61}}, 422, "invalid_option", "card.title"),
        ({"card": {"title": "x" * 10 * 1024}}, 422, "invalid_option", "card.title"),
        ({"card": {"title": "Ana\u0007"}}, 422, "invalid_option", "card.title"),
        ({"card": {"title": "  "}}, 422, "invalid_option", "card.title"),
        ({"card": {"title": "Ana", "font": "Comic"}}, 422, "invalid_option", "card.font"),
        ({"split": "shots"}, 422, "invalid_option", "split"),
        ({"fromats": ["9:16"]}, 422, "invalid_field", "fromats"),
    ],
)
def test_every_bad_json_option_gets_its_4xx_and_stores_nothing(
    client, engine, alice, options, status, code, field
):
    response = client.post("/tasks", json={"url": SOURCE, **options}, headers=alice.headers)
    body = assert_error(response, status, code)
    assert body["error"]["message"].startswith(f"{field}:"), body
    assert count_rows(engine, tasks) == 0 and count_rows(engine, outbox) == 0


def test_a_card_past_the_body_limit_is_413(client, engine, alice):
    response = client.post(
        "/tasks", json={"url": SOURCE, "card": {"title": "x" * 70_000}}, headers=alice.headers
    )
    assert_error(response, 413, "payload_too_large")
    assert count_rows(engine, tasks) == 0


def test_the_same_key_with_other_options_is_a_mismatch_and_the_same_options_a_replay(client, alice):
    key = {"Idempotency-Key": "options-1"}
    first = client.post("/tasks", json={"url": SOURCE, "formats": ["9:16"]}, headers=alice.headers | key)
    assert first.status_code == 202

    # The same options written another way are the same request.
    same = {"url": SOURCE, "formats": [{"format": "9:16", "fit": "pad"}], "loudness": "on"}
    replay = client.post("/tasks", json=same, headers=alice.headers | key)
    assert replay.status_code == 200 and replay.get_json()["id"] == first.get_json()["id"]
    for other in ({"formats": ["1:1"]}, {"formats": ["9:16"], "loudness": "off"}, {}):
        refused = client.post("/tasks", json={"url": SOURCE, **other}, headers=alice.headers | key)
        assert_error(refused, 422, "idempotency_key_mismatch")


def test_a_plain_url_and_its_explicit_defaults_are_one_request(client, alice):
    key = {"Idempotency-Key": "options-2"}
    first = client.post("/tasks", json={"url": SOURCE}, headers=alice.headers | key)
    defaults = {"url": SOURCE, "loudness": "on", "split": "fixed", "card": None}
    again = client.post("/tasks", json=defaults, headers=alice.headers | key)
    assert (first.status_code, again.status_code) == (202, 200)


# --- multipart -----------------------------------------------------------------------------


def _form(video: bytes, *fields: tuple[str, str], file_first: bool = False) -> tuple[bytes, str]:
    # surrogateescape: a field of "\udcff" is sent as the byte 0xff, which is not UTF-8.
    parts = [(name, None, value.encode("utf-8", "surrogateescape")) for name, value in fields]
    file = ("file", "run.mp4", video)
    return multipart(*([file, *parts] if file_first else [*parts, file]))


@pytest.mark.parametrize("file_first", [False, True])
def test_multipart_options_reach_the_row_the_message_and_the_read(
    client, engine, alice, api_settings, video_bytes, file_first
):
    body, content_type = _form(
        video_bytes,
        ("formats", "16:9"),
        ("formats", '{"format": "9:16", "fit": "crop"}'),
        ("loudness", "off"),
        ("card", json.dumps(OPTIONS["card"])),
        ("split", "scenes"),
        file_first=file_first,
    )
    response = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers)

    assert response.status_code == 202, response.get_data(as_text=True)
    _assert_carried(client, engine, api_settings, alice, uuid.UUID(response.get_json()["id"]), SPEC, SHOWN)


@pytest.mark.parametrize(
    "field, status, code, file_first",
    [
        (("formats", '["16:9", "5:4"]'), 422, "invalid_option", False),
        # After the file: its bytes streamed, and the upload is cancelled all the same.
        (("formats", '["16:9", "5:4"]'), 422, "invalid_option", True),
        (("loudness", "maybe"), 422, "invalid_option", False),
        # A form field is text: a value of the wrong shape is 422 there, not 400.
        (("card", "Ana Díaz"), 422, "invalid_option", True),
        (("card", ""), 422, "invalid_option", False),
        (("card", '{"title": "' + "x" * 10 * 1024 + '"}'), 422, "invalid_option", False),
        (("card", "x" * (MAX_TEXT_FIELD_BYTES + 1)), 413, "payload_too_large", False),
        (("split", "scenes\x00"), 422, "invalid_option", False),
        (("loudness", "\udcff"), 400, "invalid_option", False),
        (("owner", "bob"), 422, "field_not_allowed", False),
    ],
)
def test_a_bad_multipart_option_gets_its_4xx_and_leaves_no_object(
    client, engine, alice, api_settings, video_bytes, field, status, code, file_first
):
    body, content_type = _form(video_bytes, field, file_first=file_first)
    response = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers)
    assert_error(response, status, code)
    assert count_rows(engine, tasks) == 0
    assert object_names(api_settings.uploads_bucket, "uploads/") == []


def test_a_multipart_retry_with_other_options_is_a_mismatch(client, alice, video_bytes):
    key = {"Idempotency-Key": "options-3"}
    body, content_type = _form(video_bytes, ("formats", "1:1"))
    first = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers | key)
    assert first.status_code == 202
    body, content_type = _form(video_bytes, ("formats", '["1:1"]'))
    again = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers | key)
    assert again.status_code == 200
    body, content_type = _form(video_bytes)
    other = client.post("/tasks", data=body, content_type=content_type, headers=alice.headers | key)
    assert_error(other, 422, "idempotency_key_mismatch")


# --- tus -----------------------------------------------------------------------------------


def _create_upload(client, user, length: int, **metadata: str):
    headers = TUS | user.headers | {"Upload-Length": str(length), "Upload-Metadata": tus_metadata(**metadata)}
    return client.post("/uploads", headers=headers)


def test_tus_options_set_at_creation_reach_the_task(client, engine, alice, api_settings, video_bytes):
    created = _create_upload(
        client,
        alice,
        len(video_bytes),
        filename="run.mp4",
        formats=json.dumps(OPTIONS["formats"]),
        loudness="off",
        card=json.dumps(OPTIONS["card"]),
        split="scenes",
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    upload_id = created.headers["Location"].rsplit("/", 1)[-1]
    sent = client.patch(
        f"/uploads/{upload_id}",
        data=video_bytes,
        headers=alice.headers | TUS | {"Upload-Offset": "0", "Content-Type": OFFSET_STREAM},
    )
    assert sent.status_code == 204, sent.get_data(as_text=True)

    # Options belong to the creation: the submission may not add or change them.
    refused = client.post("/tasks", json={"upload": upload_id, "loudness": "on"}, headers=alice.headers)
    assert_error(refused, 422, "invalid_option")
    submitted = client.post("/tasks", json={"upload": upload_id}, headers=alice.headers)
    assert submitted.status_code == 202, submitted.get_data(as_text=True)
    _assert_carried(client, engine, api_settings, alice, uuid.UUID(upload_id), SPEC, SHOWN)


@pytest.mark.parametrize(
    "metadata, status, code",
    [
        ({"formats": '["16:9", "16:9"]'}, 422, "invalid_option"),
        ({"formats": "[]"}, 422, "invalid_option"),
        ({"loudness": "quiet"}, 422, "invalid_option"),
        ({"card": '{"title": "Ana\\u001b"}'}, 422, "invalid_option"),
        ({"card": "Ana"}, 422, "invalid_option"),
        ({"split": "scenes", "card": '{"title": "' + "x" * 3000 + '"}'}, 422, "invalid_option"),
        ({"card": '{"title": "' + "x" * 4000 + '"}'}, 400, "invalid_metadata"),
    ],
)
def test_a_bad_tus_option_is_refused_at_creation_before_any_byte(
    client, engine, alice, metadata, status, code
):
    response = _create_upload(client, alice, 1000, filename="run.mp4", **metadata)
    assert_error(response, status, code)
    assert count_rows(engine, tus_uploads) == 0
    assert response.headers["Tus-Resumable"] == "1.0.0"


def test_an_upload_without_options_gets_the_defaults(client, engine, alice, api_settings, video_bytes):
    created = _create_upload(client, alice, len(video_bytes), filename="run.mp4")
    upload_id = created.headers["Location"].rsplit("/", 1)[-1]
    client.patch(
        f"/uploads/{upload_id}",
        data=video_bytes,
        headers=alice.headers | TUS | {"Upload-Offset": "0", "Content-Type": OFFSET_STREAM},
    )
    assert client.post("/tasks", json={"upload": upload_id}, headers=alice.headers).status_code == 202
    spec = ClipSpec.model_validate(task_row(engine, upload_id)["spec"])
    assert spec == ClipSpec(loudness=LoudnessSpec())
    assert storage_client().bucket(api_settings.uploads_bucket).blob(f"uploads/{upload_id}/source").exists()
