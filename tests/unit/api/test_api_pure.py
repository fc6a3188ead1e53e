"""The api's pure pieces: what counts as a video, file names, signed download links."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.cloud import storage
from google.oauth2 import service_account

from services.api.objects import download_name, signed_url
from services.api.tasks import StorageQuotaExceeded, check_quota
from services.api.uploads import clean_filename, video_container
from shared.errors import UnsupportedMediaType

MP4_HEAD = b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64
QUICKTIME_HEAD = b"\x00\x00\x00\x14ftypqt  \x00\x00\x00\x00qt  " + b"\x00" * 64
MATROSKA_HEAD = b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x88matroska"
WEBM_HEAD = (
    b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\xf7\x81\x01\x42\xf2\x81\x04\x42\xf3\x81\x08\x42\x82\x84webm"
)
AVI_HEAD = b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 64


@pytest.mark.parametrize(
    "head, mime",
    [
        (MP4_HEAD, "video/mp4"),
        (QUICKTIME_HEAD, "video/quicktime"),
        (MATROSKA_HEAD, "video/x-matroska"),
        (WEBM_HEAD, "video/webm"),
        (AVI_HEAD, "video/x-msvideo"),
    ],
)
def test_video_containers_are_recognised_by_their_first_bytes(head, mime):
    assert video_container(head) == mime


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"plain text that says video.mp4",
        b"\x89PNG\r\n\x1a\n" + b"\x00" * 32,
        b"%PDF-1.7\n",
        b"ID3\x03\x00\x00\x00\x00\x00\x00",
        b"PK\x03\x04" + b"\x00" * 30,
        b"RIFF\x00\x00\x00\x00WAVEfmt ",
    ],
)
def test_anything_else_is_refused_with_415(head):
    with pytest.raises(UnsupportedMediaType) as refused:
        video_container(head)
    assert refused.value.status == 415 and refused.value.code == "not_a_video"


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("run.mp4", "run.mp4"),
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\ana\\run 2.mov", "run 2.mov"),
        ("line\nbreak\r.mp4", "linebreak.mp4"),
        ("", "upload"),
        ("/", "upload"),
        ("\u0000\u0007", "upload"),
        ("é" * 300, "é" * 255),
        ("carrera-año.mp4", "carrera-año.mp4"),
    ],
)
def test_client_file_names_lose_paths_and_control_characters(raw, clean):
    assert clean_filename(raw) == clean


def test_download_names_carry_only_the_task_id_a_word_and_the_stored_types_extension():
    task_id = uuid.UUID("00000000-0000-4000-8000-000000000001")
    assert download_name(task_id, "clip-1", "video/mp4") == f"{task_id}-clip-1.mp4"
    assert download_name(task_id, "original", "video/quicktime") == f"{task_id}-original.mov"
    assert download_name(task_id, "original", "video/x-matroska") == f"{task_id}-original.mkv"
    assert download_name(task_id, "original", 'text/html".mp4\r\nSet-Cookie: x') == f"{task_id}-original"
    assert download_name(task_id, "original", None) == f"{task_id}-original"


def test_signed_urls_are_v4_get_urls_that_expire():
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    credentials = service_account.Credentials.from_service_account_info(
        {
            "type": "service_account",
            "project_id": "idrl-test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "api@idrl-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )
    client = storage.Client(project="idrl-test", credentials=credentials)
    blob = client.bucket("idrl-clips").blob("tasks/abc/part-00.mp4")

    url = signed_url(blob, minutes=15)

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert parts.path.endswith("/idrl-clips/tasks/abc/part-00.mp4")
    assert query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"]
    assert query["X-Goog-Expires"] == ["900"]
    assert query["X-Goog-Credential"][0].startswith("api@idrl-test.iam.gserviceaccount.com/")
    assert len(query["X-Goog-Signature"][0]) == 512  # hex of a 2048-bit RSA signature


@pytest.mark.parametrize(
    "stored, adding, fits",
    [
        (0, 0, True),  # a URL task of a user with nothing stored
        (0, 1000, True),  # an upload that fills the quota exactly
        (999, 1, True),
        (999, 2, False),  # one byte past it
        (1000, 0, False),  # at the quota: not even a URL task
        (0, 1001, False),
    ],
)
def test_the_storage_quota_admits_what_fits_and_nothing_at_the_quota(stored, adding, fits):
    if fits:
        check_quota(stored, adding, quota=1000)
    else:
        with pytest.raises(StorageQuotaExceeded) as refused:
            check_quota(stored, adding, quota=1000)
        assert (refused.value.stored, refused.value.adding, refused.value.quota) == (stored, adding, 1000)
