"""The auth service against a real PostgreSQL: sign-up, login, keys, and bad input."""

import json
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
from jwt.algorithms import OKPAlgorithm
from sqlalchemy import select

from services.auth import create_app, passwords, routes
from shared.tables import users
from shared.tokens import TokenVerifier
from tests.support.db import count_rows

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
        user_id = conn.execute(select(users.c.id)).scalar_one()
    assert claims["sub"] == str(user_id)
    assert claims["exp"] - int(claims["iat"]) == 3600


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
    assert count_rows(app.extensions["engine"], users) == 0


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
    assert count_rows(app.extensions["engine"], users) == 1


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


def _login(client, password, address, **who):
    who = who or {"email": GOOD["email"]}
    return client.post(
        "/auth/login", json={**who, "password": password}, environ_base={"REMOTE_ADDR": address}
    )


def _fail_from_many_addresses(client, count, **who):
    """``count`` wrong passwords for the account, each from an address of its own."""
    return [_login(client, "Wrong123", f"10.1.0.{i}", **who).status_code for i in range(count)]


def test_failures_on_an_account_slow_the_failing_clients_never_the_owner(client, fresh_minute):
    client.post("/auth/signup", json=GOOD)
    assert _fail_from_many_addresses(client, 20) == [401] * 20

    # The account is past its limit: the owner, from an address that has not failed,
    # still has the password checked and logs in; so does a first try from anyone.
    assert _login(client, "Admin123", "10.1.1.1").status_code == 200
    _assert_error(_login(client, "Wrong123", "10.1.2.2"), 401, "invalid_credentials")
    # An address that already tried the account this minute is refused unchecked,
    # even with the right password (Retry-After: the end of the minute).
    for address, password in (("10.1.0.3", "Admin123"), ("10.1.2.2", "Wrong123")):
        limited = _login(client, password, address)
        _assert_error(limited, 429, "rate_limited")
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "this account" in limited.get_json()["error"]["message"]


def test_email_and_username_count_as_one_account(client, fresh_minute):
    client.post("/auth/signup", json=GOOD)
    by_email = [_login(client, "Wrong123", f"10.2.0.{i}").status_code for i in range(10)]
    by_name = [_login(client, "Wrong123", f"10.3.0.{i}", username="RUNNER1").status_code for i in range(10)]
    assert by_email + by_name == [401] * 20
    # 21 attempts on the account, the second from this address: refused.
    _assert_error(_login(client, "Wrong123", "10.2.0.0", username="runner1"), 429, "rate_limited")


@pytest.mark.parametrize("who", [{"email": GOOD["email"]}, {"email": "nobody@league.org"}])
def test_a_name_no_account_has_is_limited_exactly_like_an_account(client, fresh_minute, who):
    client.post("/auth/signup", json=GOOD)
    statuses = [_login(client, "Wrong123", f"10.4.0.{i}", **who).status_code for i in range(20)]
    assert statuses == [401] * 20
    assert _login(client, "Wrong123", "10.4.0.1", **who).status_code == 429
    assert _login(client, "Wrong123", "10.4.9.9", **who).status_code == 401


def test_refused_attempts_count_on_every_counter_and_a_checked_password_is_never_429(client, fresh_minute):
    """The order (docs/api.md, "Login limits"): every attempt is counted on the client,
    the account and the client-on-account counters before anything is decided; then the
    client limit, then the account's; a password that was checked answers 200 or 401."""
    client.post("/auth/signup", json=GOOD)
    address = "192.0.2.50"
    assert _login(client, "Wrong123", address).status_code == 401
    assert _fail_from_many_addresses(client, 20) == [401] * 20
    # The account's limit refuses this address's second try (not checked: 429, not 401)...
    _assert_error(_login(client, "Wrong123", address), 429, "rate_limited")
    # ...and that refused try still counted on the address: 2 of its 20 are spent.
    others = [_login(client, "Wrong123", address, email=f"u{i}@league.org").status_code for i in range(19)]
    assert others == [401] * 18 + [429]
    assert "this address" in _login(client, "Admin123", address).get_json()["error"]["message"]


def test_a_right_password_takes_its_attempt_back(client, fresh_minute):
    client.post("/auth/signup", json=GOOD)
    address = "192.0.2.60"
    assert [_login(client, "Admin123", address).status_code for _ in range(25)] == [200] * 25
    assert [_login(client, "Wrong123", address).status_code for _ in range(20)] == [401] * 20
    assert _login(client, "Wrong123", address).status_code == 429


def test_repeated_failed_logins_from_one_client_are_rate_limited(client, fresh_minute):
    statuses = [
        client.post(
            "/auth/login",
            json={"email": f"u{i}@league.org", "password": "Wrong123"},
            environ_base={"REMOTE_ADDR": "192.0.2.7"},
        ).status_code
        for i in range(21)
    ]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429


def test_the_addresses_of_one_ipv6_64_are_one_client(client, fresh_minute):
    statuses = [
        _login(client, "Wrong123", f"2001:db8:1:2::{i:x}", email=f"u{i}@league.org").status_code
        for i in range(21)
    ]
    assert statuses == [401] * 20 + [429]
    assert _login(client, "Wrong123", "2001:db8:1:3::1").status_code == 401


def test_a_parallel_burst_of_guesses_gets_no_more_than_the_limit_checked(app, fresh_minute, monkeypatch):
    with app.test_client() as client:
        client.post("/auth/signup", json=GOOD)
    checked = []

    def counting_verify(password_hash, password):
        # The real check, recorded: how many passwords the burst got checked.
        checked.append(password)
        return passwords.verify_password(password_hash, password)

    monkeypatch.setattr(routes, "verify_password", counting_verify)

    def guess(number):
        with app.test_client() as own:
            return _login(own, f"Wrong{number:03d}", "198.51.100.9").status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(guess, range(50)))
    assert len(checked) == 20
    assert statuses.count(401) == 20 and statuses.count(429) == 30


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
    assert count_rows(app.extensions["engine"], users) == 0
