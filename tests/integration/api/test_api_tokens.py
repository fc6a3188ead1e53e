"""Bearer tokens at the api: verified against the auth service's JWKS over HTTP, every
defect a 401, an unreachable key service a 503."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import jwt.jwks_client
import pytest

from services.api import create_app
from shared.tokens import generate_signing_key_pem, issue_token, public_jwk, signing_key_from_pem
from tests.support.api import JwksServer, assert_error


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    with JwksServer() as server:
        yield server


@pytest.fixture
def jwks_app(api_settings, jwks):
    """The api as production builds it: no injected verifier, keys from AUTH_JWKS_URL."""
    app = create_app(api_settings.model_copy(update={"auth_jwks_url": jwks.url}))
    yield app
    app.extensions["engine"].dispose()


class _AdvancedClock:
    """``time`` for PyJWT's JWKS client, moved forward by ``offset`` seconds."""

    def __init__(self, offset: float) -> None:
        self.offset = offset

    def monotonic(self) -> float:
        return time.monotonic() + self.offset


def test_tokens_are_verified_against_the_jwks_and_a_new_key_is_fetched_on_sight(
    jwks_app, jwks, alice, api_settings, monkeypatch
):
    client = jwks_app.test_client()
    first, second = (signing_key_from_pem(generate_signing_key_pem()) for _ in range(2))
    jwks.keys = [public_jwk(first.public_key)]

    token = issue_token(first, api_settings, str(alice.id))
    assert client.get("/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert jwks.fetches == 1  # cached

    # The auth service rotates to a second key. Right after a fetch, an unknown kid does
    # not refetch (PyJWT's 30 s cooldown: a flood of forged kids cannot hammer auth)...
    jwks.keys = [public_jwk(second.public_key), public_jwk(first.public_key)]
    rotated = issue_token(second, api_settings, str(alice.id))
    assert_error(client.get("/tasks", headers={"Authorization": f"Bearer {rotated}"}), 401, "invalid_token")
    assert jwks.fetches == 1
    # ...once the cooldown is over, the unknown kid makes the api fetch the keys again.
    monkeypatch.setattr(jwt.jwks_client, "time", _AdvancedClock(31))
    assert client.get("/tasks", headers={"Authorization": f"Bearer {rotated}"}).status_code == 200
    assert jwks.fetches == 2
    assert client.get("/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200

    stranger = signing_key_from_pem(generate_signing_key_pem())
    forged = issue_token(stranger, api_settings, str(alice.id))
    assert_error(client.get("/tasks", headers={"Authorization": f"Bearer {forged}"}), 401, "invalid_token")


def test_an_unreachable_key_service_gets_503_not_401(make_app, api_settings, alice):
    app = create_app(api_settings.model_copy(update={"auth_jwks_url": "http://127.0.0.1:9/jwks.json"}))
    try:
        response = app.test_client().get("/tasks", headers=alice.headers)
    finally:
        app.extensions["engine"].dispose()
    assert_error(response, 503, "unavailable")


@pytest.mark.parametrize(
    "authorization, code",
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("Bearer", "missing_token"),
        ("Basic YWxpY2U6c2VjcmV0", "missing_token"),
        ("Bearer not.a.token", "invalid_token"),
        ("Bearer " + "a" * 5000, "invalid_token"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "invalid_token"),
    ],
)
def test_missing_or_malformed_tokens_get_401_with_a_bearer_challenge(client, authorization, code):
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path in (("GET", "/tasks"), ("POST", "/tasks"), ("GET", "/tasks/x"), ("DELETE", "/tasks/x")):
        response = client.open(path, method=method, headers=headers, json={"url": "https://a.example/x.mp4"})
        assert_error(response, 401, code)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_expired_foreign_audience_and_unknown_user_tokens_get_401(client, alice, api_key, api_settings):
    expired = issue_token(api_key, api_settings, str(alice.id), now=datetime.now(UTC) - timedelta(hours=2))
    assert_error(client.get("/tasks", headers={"Authorization": f"Bearer {expired}"}), 401, "token_expired")

    other_audience = issue_token(
        api_key, api_settings.model_copy(update={"token_audience": "other"}), str(alice.id)
    )
    assert_error(
        client.get("/tasks", headers={"Authorization": f"Bearer {other_audience}"}), 401, "invalid_token"
    )

    not_a_user_id = issue_token(api_key, api_settings, "alice")
    assert_error(
        client.get("/tasks", headers={"Authorization": f"Bearer {not_a_user_id}"}), 401, "invalid_token"
    )

    ghost = issue_token(api_key, api_settings, str(uuid.uuid4()))
    response = client.post(
        "/tasks", json={"url": "https://a.example/x.mp4"}, headers={"Authorization": f"Bearer {ghost}"}
    )
    assert_error(response, 401, "unknown_user")
