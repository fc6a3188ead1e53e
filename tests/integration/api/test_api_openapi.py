"""The OpenAPI document and the code agree: which operations exist, which processing
options a submission takes, and the shape of a task."""

from __future__ import annotations

import re

import jsonschema_rs
import pytest

from services.api.openapi import SPEC
from services.api.options import (
    CARD_FIELDS,
    FITS,
    FORMAT_NAMES,
    LOUDNESS_CHOICES,
    OPTION_FIELDS,
    SPLIT_CHOICES,
)
from services.api.uploads import FILE_FIELD
from services.auth import create_app as create_auth_app
from shared.events import CARD_TEXT_MAX_CHARS
from shared.tokens import generate_signing_key_pem
from tests.support.api import openapi_validator

_DOCUMENTED_METHODS = {"get", "post", "put", "patch", "delete"}


def _operations(app) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            found.add((method.lower(), path))
    return found


def test_every_route_of_the_api_and_auth_is_documented_and_nothing_else(app, settings):
    auth_app = create_auth_app(
        settings.model_copy(update={"token_signing_key": generate_signing_key_pem().decode()})
    )
    try:
        served = _operations(app) | {op for op in _operations(auth_app) if op[1].startswith("/auth/")}
    finally:
        auth_app.extensions["engine"].dispose()
    documented = {
        (method, path)
        for path, item in SPEC["paths"].items()
        for method in item
        if method in _DOCUMENTED_METHODS
    }
    assert served == documented


def test_the_api_serves_the_document(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.get_json() == SPEC
    assert SPEC["openapi"].startswith("3.")


def test_the_documented_options_are_the_ones_the_code_reads():
    schemas = SPEC["components"]["schemas"]
    assert set(schemas["SubmitByUrl"]["properties"]) == {"url", *OPTION_FIELDS}
    assert set(schemas["SubmitByUpload"]["properties"]) == {FILE_FIELD, *OPTION_FIELDS}
    assert tuple(schemas["FormatName"]["enum"]) == FORMAT_NAMES
    fit = schemas["FormatsOption"]["items"]["oneOf"][1]["properties"]["fit"]
    assert tuple(fit["enum"]) == FITS
    assert tuple(schemas["LoudnessOption"]["enum"]) == (*LOUDNESS_CHOICES, None)
    assert tuple(schemas["SplitOption"]["enum"]) == (*SPLIT_CHOICES, None)
    card = schemas["CardOption"]["properties"]
    assert tuple(card) == CARD_FIELDS
    assert all(f"At most {CARD_TEXT_MAX_CHARS} characters" in text["description"] for text in card.values())


def test_a_submission_the_document_allows_is_accepted_and_its_task_matches_the_document(client, alice):
    body = {
        "url": "https://videos.league.example/runs/run.mp4",
        "formats": ["1:1", {"format": "9:16", "fit": "crop"}],
        "loudness": "off",
        "card": {"title": "Ana Díaz #12", "subtitle": None},
        "split": "scenes",
    }
    openapi_validator("SubmitByUrl").validate(body)
    with pytest.raises(jsonschema_rs.ValidationError):
        openapi_validator("SubmitByUrl").validate(body | {"formats": ["4:3"]})
    task = openapi_validator("Task")
    for submitted in (body, {"url": body["url"]}):
        response = client.post("/tasks", json=submitted, headers=alice.headers)
        assert response.status_code == 202, response.get_data(as_text=True)
        task.validate(response.get_json())
        task.validate(client.get(response.headers["Location"], headers=alice.headers).get_json())
