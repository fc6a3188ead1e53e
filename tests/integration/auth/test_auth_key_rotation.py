"""Signing key rotation without logging anyone out: while auth publishes the previous key
(TOKEN_PREVIOUS_PUBLIC_KEYS) beside its new one, the api keeps accepting the tokens the
previous key signed; once the setting is emptied, those tokens are refused.

The auth service is served over HTTP on one loopback address across its "restarts" (a
new app each time, as a rolled instance group keeps the load balancer's address), and
one api process, started once and kept running as in production, verifies against that
JWKS (no injected verifier). Its JWKS cache is 1 s here, so each step waits past it."""

from __future__ import annotations

import time

import jwt
import pytest

from services.auth import create_app as create_auth
from shared.tokens import (
    generate_signing_key_pem,
    issue_token,
    public_key_pem,
    signing_key_from_pem,
)
from tests.support.auth import ATHLETE, JWKS_CACHE_SECONDS, list_tasks, login


def _assert_refused(response) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "invalid_token"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _kid(token: str) -> str:
    return jwt.get_unverified_header(token)["kid"]


def _past_the_api_key_cache() -> None:
    # The api fetches the JWKS again on the first request after its cache time.
    time.sleep(JWKS_CACHE_SECONDS + 0.5)


def test_tokens_of_the_previous_key_work_through_a_rotation_and_stop_once_it_is_dropped(
    settings, auth_server, make_auth, make_api
):
    old_pem, new_pem = generate_signing_key_pem().decode(), generate_signing_key_pem().decode()
    old_key, new_key = signing_key_from_pem(old_pem.encode()), signing_key_from_pem(new_pem.encode())

    # Before: auth signs with the old key, an athlete logs in; one api runs throughout.
    auth_server.app = make_auth(token_signing_key=old_pem)
    assert auth_server.app.test_client().post("/auth/signup", json=ATHLETE).status_code == 201
    old_token = login(auth_server.app)
    assert _kid(old_token) == old_key.kid
    api = make_api()
    assert list_tasks(api, old_token).status_code == 200

    # Rotation: auth restarted with the new key and the old key's public half published.
    auth_server.app = make_auth(
        token_signing_key=new_pem, token_previous_public_keys=public_key_pem(old_key.public_key)
    )
    assert auth_server.published_kids() == [new_key.kid, old_key.kid]
    new_token = login(auth_server.app)
    assert _kid(new_token) == new_key.kid  # the previous key never signs
    _past_the_api_key_cache()
    assert list_tasks(api, old_token).status_code == 200
    assert list_tasks(api, new_token).status_code == 200
    user_id = jwt.decode(new_token, options={"verify_signature": False})["sub"]
    stranger = signing_key_from_pem(generate_signing_key_pem())
    _assert_refused(list_tasks(api, issue_token(stranger, settings, user_id)))

    # Rotation done (the old tokens have expired by now in production): setting emptied.
    auth_server.app = make_auth(token_signing_key=new_pem, token_previous_public_keys="")
    assert auth_server.published_kids() == [new_key.kid]
    _past_the_api_key_cache()
    _assert_refused(list_tasks(api, old_token))
    assert list_tasks(api, new_token).status_code == 200
    assert list_tasks(api, login(auth_server.app)).status_code == 200


def test_a_leaked_key_dropped_from_the_jwks_stops_verifying_in_a_running_api(
    auth_server, make_auth, make_api
):
    """docs/deploy.md, "A leaked key": the leaked key is not kept published, and an api
    that has verified its tokens, and keeps running, refuses them within its cache time."""
    leaked_pem, new_pem = generate_signing_key_pem().decode(), generate_signing_key_pem().decode()
    auth_server.app = make_auth(token_signing_key=leaked_pem)
    assert auth_server.app.test_client().post("/auth/signup", json=ATHLETE).status_code == 201
    leaked_token = login(auth_server.app)
    api = make_api()
    for _ in range(3):  # verified, and its key cached, several times
        assert list_tasks(api, leaked_token).status_code == 200

    auth_server.app = make_auth(token_signing_key=new_pem, token_previous_public_keys="")
    assert auth_server.published_kids() == [signing_key_from_pem(new_pem.encode()).kid]
    _past_the_api_key_cache()
    _assert_refused(list_tasks(api, leaked_token))
    assert list_tasks(api, login(auth_server.app)).status_code == 200


def test_the_previous_keys_arrive_as_terraform_writes_them_in_the_env_file(
    settings, auth_server, make_auth, make_api
):
    first, second = (signing_key_from_pem(generate_signing_key_pem()) for _ in range(2))
    current_pem = generate_signing_key_pem().decode()
    one_line = (public_key_pem(first.public_key) + public_key_pem(second.public_key)).replace("\n", "\\n")
    auth_server.app = make_auth(token_signing_key=current_pem, token_previous_public_keys=one_line)
    current = signing_key_from_pem(current_pem.encode())
    assert auth_server.published_kids() == [current.kid, first.kid, second.kid]

    assert auth_server.app.test_client().post("/auth/signup", json=ATHLETE).status_code == 201
    user_id = jwt.decode(login(auth_server.app), options={"verify_signature": False})["sub"]
    api = make_api()
    for previous in (first, second):
        assert list_tasks(api, issue_token(previous, settings, user_id)).status_code == 200


@pytest.mark.parametrize("which", ["private", "garbage"])
def test_auth_does_not_start_with_anything_but_public_keys_in_the_setting(settings, which):
    value = generate_signing_key_pem().decode() if which == "private" else "not a key"
    with pytest.raises(SystemExit, match="TOKEN_PREVIOUS_PUBLIC_KEYS"):
        create_auth(settings.model_copy(update={"token_previous_public_keys": value}))


def _auth_down(environ, start_response):
    start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("Content-Length", "4")])
    return [b"down"]


def test_once_its_key_cache_is_stale_an_api_that_cannot_reach_auth_answers_503_not_200(
    auth_server, make_auth, make_api
):
    pem = generate_signing_key_pem().decode()
    auth_server.app = make_auth(token_signing_key=pem)
    assert auth_server.app.test_client().post("/auth/signup", json=ATHLETE).status_code == 201
    token = login(auth_server.app)
    api = make_api()
    assert list_tasks(api, token).status_code == 200

    auth_server.app = _auth_down
    _past_the_api_key_cache()
    # Keys it can no longer confirm are not trusted: a dependency down, not a bad token.
    refused = list_tasks(api, token)
    assert refused.status_code == 503, refused.get_data(as_text=True)
    assert refused.get_json()["error"]["code"] == "unavailable"

    auth_server.app = make_auth(token_signing_key=pem)
    assert list_tasks(api, token).status_code == 200
