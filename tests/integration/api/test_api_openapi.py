"""The OpenAPI document and the code agree on which operations exist."""

from __future__ import annotations

import re

from services.api.openapi import SPEC
from services.auth import create_app as create_auth_app
from shared.tokens import generate_signing_key_pem

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
