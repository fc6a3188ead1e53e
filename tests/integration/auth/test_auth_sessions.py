"""Ending sessions: POST /auth/logout and POST /auth/password through the real auth
service, and the tokens they end refused by a real api process that keeps running
(docs/api.md, "Sessions")."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import jwt
import pytest
from sqlalchemy import select

from shared.tables import users
from shared.tokens import issue_token
from tests.support.auth import ATHLETE, list_tasks, login

# The api keeps a user's cutoff this long in these tests (production: at most 30 s).
CUTOFF_CACHE_SECONDS = 1
NEW_PASSWORD = "Sprint456"


@pytest.fixture
def auth(auth_server, make_auth):
    auth_server.app = app = make_auth()
    assert app.test_client().post("/auth/signup", json=ATHLETE).status_code == 201
    return app


@pytest.fixture
def api(make_api):
    return make_api(token_cutoff_cache_seconds=CUTOFF_CACHE_SECONDS)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _logout(auth, token: str):
    return auth.test_client().post("/auth/logout", headers=_bearer(token))


def _change_password(auth, token: str, current: str, new: str, new_2: str | None = None):
    body = {
        "current_password": current,
        "new_password": new,
        "new_password_2": new if new_2 is None else new_2,
    }
    return auth.test_client().post("/auth/password", json=body, headers=_bearer(token))


def _assert_error(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    if code:
        assert body["error"]["code"] == code, body


def _assert_ended_at_the_api(response) -> None:
    _assert_error(response, 401, "session_ended")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def _past_the_api_cutoff_cache() -> None:
    # The api reads the cutoff again on the first request after its cache time.
    time.sleep(CUTOFF_CACHE_SECONDS + 0.5)


def _cutoff(auth):
    with auth.extensions["engine"].connect() as conn:
        return conn.execute(
            select(users.c.tokens_valid_after).where(users.c.email == ATHLETE["email"])
        ).scalar_one()


def test_logout_ends_the_token_at_auth_at_once_and_at_a_running_api_within_its_cache_time(auth, api):
    token = login(auth)
    other_device = login(auth)
    assert list_tasks(api, token).status_code == 200  # the api has read the cutoff (none yet)

    assert _logout(auth, token).status_code == 204
    # Auth reads the cutoff afresh: the ended token cannot log out again (so a stolen,
    # ended token cannot keep ending the sessions that follow).
    _assert_error(_logout(auth, token), 401, "session_ended")
    _past_the_api_cutoff_cache()
    _assert_ended_at_the_api(list_tasks(api, token))
    _assert_ended_at_the_api(list_tasks(api, other_device))  # every token issued before
    assert list_tasks(api, login(auth)).status_code == 200


def test_a_token_issued_right_after_a_logout_in_the_same_second_still_works(auth, api):
    token = login(auth)
    assert _logout(auth, token).status_code == 204
    assert list_tasks(api, login(auth)).status_code == 200  # a real login right after

    # Tokens signed by auth's own key at the cutoff's instant, one microsecond before
    # and after it: within one second, only the one issued before is ended.
    cutoff = _cutoff(auth)
    key, settings = auth.extensions["signing_key"], auth.extensions["settings"]
    user_id = jwt.decode(token, options={"verify_signature": False})["sub"]
    before, at, after = (
        issue_token(key, settings, user_id, now=cutoff + timedelta(microseconds=offset))
        for offset in (-1, 0, 1)
    )
    assert {int(jwt.decode(t, options={"verify_signature": False})["iat"]) for t in (at, after)} == {
        int(cutoff.timestamp())
    }
    _assert_ended_at_the_api(list_tasks(api, before))
    assert list_tasks(api, at).status_code == 200
    assert list_tasks(api, after).status_code == 200


def test_a_password_change_ends_every_earlier_token_and_the_new_password_logs_in(auth, make_api):
    api = make_api(token_cutoff_cache_seconds=0)  # reads the cutoff on every request
    token, other_device = login(auth), login(auth)
    assert list_tasks(api, token).status_code == 200

    assert _change_password(auth, token, ATHLETE["password"], NEW_PASSWORD).status_code == 204
    _assert_ended_at_the_api(list_tasks(api, token))
    _assert_ended_at_the_api(list_tasks(api, other_device))
    _assert_error(_change_password(auth, token, NEW_PASSWORD, "Another789"), 401, "session_ended")
    old = auth.test_client().post(
        "/auth/login", json={"email": ATHLETE["email"], "password": ATHLETE["password"]}
    )
    _assert_error(old, 401, "invalid_credentials")
    assert list_tasks(api, login(auth, NEW_PASSWORD)).status_code == 200


def test_a_wrong_current_password_changes_nothing(auth, api):
    token = login(auth)
    _assert_error(_change_password(auth, token, "Wrong1234", NEW_PASSWORD), 401, "invalid_credentials")
    assert _cutoff(auth) is None
    assert list_tasks(api, token).status_code == 200
    login(auth)  # the password is still the old one


@pytest.mark.parametrize(
    "new, new_2, status",
    [
        ("Ab1", None, 422),  # too short
        ("sprint456", None, 422),  # no upper-case letter
        ("SPRINT456", None, 422),  # no lower-case letter
        ("SprintSprint", None, 422),  # no digit
        (NEW_PASSWORD, "Sprint457", 422),  # typed differently twice
        (ATHLETE["password"], None, 422),  # the same as the current one
        (12345678, None, 400),  # not text
    ],
)
def test_a_new_password_is_held_to_the_signup_policy(auth, new, new_2, status):
    token = login(auth)
    _assert_error(_change_password(auth, token, ATHLETE["password"], new, new_2), status)
    assert _cutoff(auth) is None
    login(auth)


@pytest.mark.parametrize("route", ["/auth/logout", "/auth/password"])
def test_session_routes_need_a_live_token_of_a_real_user(auth, route):
    client = auth.test_client()
    _assert_error(client.post(route), 401, "missing_token")
    _assert_error(client.post(route, headers=_bearer("not.a.token")), 401, "invalid_token")
    ghost = issue_token(auth.extensions["signing_key"], auth.extensions["settings"], str(uuid.uuid4()))
    refused = client.post(route, headers=_bearer(ghost))
    _assert_error(refused, 401, "unknown_user")
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_current_passwords_count_against_the_login_limits(auth, fresh_minute):
    token = login(auth)
    statuses = [
        _change_password(auth, token, f"Wrong{number:04d}", NEW_PASSWORD).status_code for number in range(21)
    ]
    assert statuses == [401] * 20 + [429]
