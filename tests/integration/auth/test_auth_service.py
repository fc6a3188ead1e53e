"""The auth service against a real PostgreSQL: sign-up, login, keys, and bad input."""

import json

import jwt
import pytest
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import text

from services.auth import create_app
from shared.tokens import TokenVerifier

GOOD = {
    "username": "runner1",
    "email": "Runner1@League.org",
    "password": "Admin123",
    "password_2": "Admin123",
}


@pytest.fixture
def app(settings):
    app = create_app(settings)
    yield app
    app.extensions["engine"].dispose()


@pytest.fixture
def client(app):
    return app.test_client()


def _user_count(app) -> int:
    with app.extensions["engine"].connect() as conn:
        return conn.execute(text("SELECT count(*) FROM users")).scalar_one()


def _assert_error(response, status, code=None):
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert "Traceback" not in response.get_data(as_text=True)
    if code:
        assert body["error"]["code"] == code


def test_signup_returns_the_user_without_its_hash(client):
    response = client.post("/auth/signup", json=GOOD)
    assert response.status_code == 201
    body = response.get_json()
    assert body["username"] == "runner1" and body["email"] == "Runner1@League.org"
    assert set(body) == {"id", "username", "email", "created_at"}


def test_login_by_email_any_case_or_username_gives_a_verifiable_token(app, client):
    user_id = client.post("/auth/signup", json=GOOD).get_json()["id"]
    verifier = TokenVerifier(
        app.extensions["settings"], public_keys=[app.extensions["signing_key"].public_key]
    )
    for who in ({"email": "runner1@league.org"}, {"username": "RUNNER1"}):
        response = client.post("/auth/login", json={**who, "password": "Admin123"})
        assert response.status_code == 200
        body = response.get_json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 3600
        assert verifier.verify(body["token"])["sub"] == user_id


def test_the_jwks_verifies_the_token_with_pyjwt(app, client):
    client.post("/auth/signup", json=GOOD)
    token = client.post("/auth/login", json={"email": GOOD["email"], "password": "Admin123"}).get_json()[
        "token"
    ]
    keys = client.get("/auth/.well-known/jwks.json").get_json()["keys"]
    assert len(keys) == 1 and keys[0]["kty"] == "OKP" and "d" not in keys[0]
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "EdDSA" and header["kid"] == keys[0]["kid"]
    claims = jwt.decode(
        token, OKPAlgorithm.from_jwk(keys[0]), algorithms=["EdDSA"], audience="idrl-api", issuer="idrl-auth"
    )
    with app.extensions["engine"].connect() as conn:
        user_id = conn.execute(text("SELECT id FROM users")).scalar_one()
    assert claims["sub"] == str(user_id)
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("cache_seconds", [300, 17])
def test_the_jwks_answer_may_be_cached_as_long_as_the_api_caches_the_keys(settings, cache_seconds):
    app = create_app(settings.model_copy(update={"jwks_cache_seconds": cache_seconds}))
    try:
        response = app.test_client().get("/auth/.well-known/jwks.json")
    finally:
        app.extensions["engine"].dispose()
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == f"public, max-age={cache_seconds}"


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "[1, 2]", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "username=a", "content_type": "application/x-www-form-urlencoded"}, 415, None),
        ({"data": "{}", "content_type": "text/plain"}, 415, None),
        ({"json": {}}, 400, "invalid_request"),
        ({"json": {**GOOD, "password": 12345678}}, 400, "invalid_request"),
        ({"json": {**GOOD, "username": ["a"]}}, 400, "invalid_request"),
        ({"json": {**GOOD, "email": None}}, 400, "invalid_request"),
        (
            {"data": '{"username": "' + "x" * (1024 * 1024) + '"}', "content_type": "application/json"},
            413,
            None,
        ),
        ({"json": {**GOOD, "password": "Ab1", "password_2": "Ab1"}}, 422, None),
        ({"json": {**GOOD, "password": "admin123", "password_2": "admin123"}}, 422, None),
        ({"json": {**GOOD, "password": "ADMIN123", "password_2": "ADMIN123"}}, 422, None),
        ({"json": {**GOOD, "password": "AdminAdmin", "password_2": "AdminAdmin"}}, 422, None),
        ({"json": {**GOOD, "password_2": "Admin124"}}, 422, None),
        ({"json": {**GOOD, "email": "not-an-email"}}, 422, None),
        ({"json": {**GOOD, "username": "robert'); DROP TABLE users;--"}}, 422, None),
        ({"json": {**GOOD, "email": "x' OR '1'='1@a.co"}}, 422, None),
        ({"json": {**GOOD, "username": "atleta_ñandú"}}, 422, None),
        ({"json": {**GOOD, "role": "admin"}}, 422, "invalid_field"),
        ({"json": {**GOOD, "id": "00000000-0000-0000-0000-000000000000"}}, 422, "invalid_field"),
    ],
)
def test_bad_signups_get_a_clear_4xx_and_store_nothing(app, client, kwargs, status, code):
    _assert_error(client.post("/auth/signup", **kwargs), status, code)
    assert _user_count(app) == 0


def test_duplicate_username_and_email_in_other_case_conflict(app, client):
    assert client.post("/auth/signup", json=GOOD).status_code == 201
    _assert_error(
        client.post("/auth/signup", json={**GOOD, "email": "other@league.org"}), 409, "username_taken"
    )
    _assert_error(
        client.post("/auth/signup", json={**GOOD, "username": "runner2", "email": "RUNNER1@LEAGUE.ORG"}),
        409,
        "email_taken",
    )
    assert _user_count(app) == 1


def test_unknown_user_and_wrong_password_get_the_same_401(client):
    client.post("/auth/signup", json=GOOD)
    unknown = client.post("/auth/login", json={"email": "nobody@league.org", "password": "Admin123"})
    wrong = client.post("/auth/login", json={"email": GOOD["email"], "password": "Admin124"})
    _assert_error(unknown, 401, "invalid_credentials")
    assert unknown.get_json() == wrong.get_json()


@pytest.mark.parametrize(
    "body",
    [
        {"password": "Admin123"},
        {"email": "a@b.co"},
        {"email": 1, "password": "x"},
        {"email": "' OR 1=1 --", "password": "x"},
    ],
)
def test_bad_logins_are_4xx(client, body):
    response = client.post("/auth/login", json=body)
    assert 400 <= response.status_code < 500
    _assert_error(response, response.status_code)


def test_repeated_failed_logins_for_one_account_are_rate_limited(client):
    client.post("/auth/signup", json=GOOD)
    statuses = [
        client.post(
            "/auth/login",
            json={"email": GOOD["email"], "password": "Wrong123"},
            environ_base={"REMOTE_ADDR": f"10.1.0.{i}"},
        ).status_code
        for i in range(21)
    ]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429
    limited = client.post(
        "/auth/login",
        json={"email": GOOD["email"], "password": "Admin123"},
        environ_base={"REMOTE_ADDR": "10.1.1.1"},
    )
    _assert_error(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60


def test_repeated_failed_logins_from_one_client_are_rate_limited(client):
    statuses = [
        client.post(
            "/auth/login",
            json={"email": f"u{i}@league.org", "password": "Wrong123"},
            environ_base={"REMOTE_ADDR": "192.0.2.7"},
        ).status_code
        for i in range(21)
    ]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429


def test_health_and_readiness(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["checks"] == {"database": "ok"}


def test_readiness_reports_a_database_that_does_not_answer(settings):
    broken = settings.model_copy(
        update={
            "database_url": "postgresql+pg8000://idrl:idrl@127.0.0.1:9/idrl",
            "db_pool_timeout_seconds": 1.0,
        }
    )
    app = create_app(broken)
    response = app.test_client().get("/readyz")
    app.extensions["engine"].dispose()
    assert response.status_code == 503
    assert response.get_json()["checks"] == {"database": "unavailable"}


def test_unknown_routes_and_methods_answer_in_the_error_shape(client):
    _assert_error(client.get("/auth/nowhere"), 404, "not_found")
    _assert_error(client.get("/auth/login"), 405, "method_not_allowed")


@pytest.mark.parametrize("text", ["a\u0000b", "\ud800", "runner\udfff1"])
@pytest.mark.parametrize(
    "route, field",
    [
        ("/auth/login", "email"),
        ("/auth/login", "username"),
        ("/auth/signup", "username"),
        ("/auth/signup", "email"),
    ],
)
def test_text_postgresql_cannot_store_is_refused_not_a_500(app, client, route, field, text):
    body = {**GOOD, field: text} if route == "/auth/signup" else {field: text, "password": "Admin123"}
    raw = json.dumps(body)  # escapes NUL and lone surrogates as \\u sequences
    _assert_error(client.post(route, data=raw, content_type="application/json"), 422, "invalid_text")
    assert _user_count(app) == 0
