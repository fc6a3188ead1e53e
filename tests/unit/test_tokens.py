"""The one token verifier: every way a token can be wrong is refused."""

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from shared.config import Settings
from shared.tokens import (
    InvalidToken,
    TokenVerifier,
    generate_signing_key_pem,
    issue_token,
    public_jwk,
    signing_key_from_pem,
)

SETTINGS = Settings(token_issuer="idrl-auth", token_audience="idrl-api", token_ttl_seconds=3600)


@pytest.fixture(scope="module")
def key():
    return signing_key_from_pem(generate_signing_key_pem())


@pytest.fixture(scope="module")
def verifier(key):
    return TokenVerifier(SETTINGS, public_keys=[key.public_key])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides):
    now = datetime.now(UTC)
    claims = {
        "sub": "user-1",
        "iss": SETTINGS.token_issuer,
        "aud": SETTINGS.token_audience,
        "iat": int(now.timestamp()),
        "nbf": int(now.timestamp()),
        "exp": int((now + timedelta(hours=1)).timestamp()),
    }
    claims.update(overrides)
    return claims


def _unsigned(header: dict, claims: dict) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"


def test_a_fresh_token_verifies_and_names_its_user(key, verifier):
    token = issue_token(key, SETTINGS, "user-42")
    claims = verifier.verify(token)
    assert claims["sub"] == "user-42"
    assert claims["exp"] - claims["iat"] == 3600
    assert jwt.get_unverified_header(token)["kid"] == key.kid


def test_the_kid_is_the_rfc7638_thumbprint(key):
    jwk = public_jwk(key.public_key)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": jwk["x"]}, separators=(",", ":"))
    assert jwk["kid"] == _b64(hashlib.sha256(canonical.encode()).digest())
    assert jwk["alg"] == "EdDSA" and "d" not in jwk


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "Bearer x.y.z"])
def test_garbage_is_refused(verifier, token):
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_alg_none_is_refused(key, verifier):
    token = _unsigned({"alg": "none", "typ": "JWT", "kid": key.kid}, _claims()) + "."
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_hs256_signed_with_the_public_key_is_refused(key, verifier):
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (public_pem, base64.urlsafe_b64decode(public_jwk(key.public_key)["x"] + "==")):
        signing_input = _unsigned({"alg": "HS256", "typ": "JWT", "kid": key.kid}, _claims())
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken):
            verifier.verify(f"{signing_input}.{_b64(signature)}")


def _from_now(**delta) -> int:
    return int((datetime.now(UTC) + timedelta(**delta)).timestamp())


# Times are computed when the test runs, not when it is collected.
@pytest.mark.parametrize(
    "overrides, code",
    [
        (lambda: {"exp": _from_now(minutes=-5)}, "token_expired"),
        (lambda: {"nbf": _from_now(minutes=5)}, "invalid_token"),
        (lambda: {"aud": "someone-else"}, "invalid_token"),
        (lambda: {"iss": "https://evil.example"}, "invalid_token"),
        (lambda: {"sub": None}, "invalid_token"),
    ],
    ids=["expired", "not-yet-valid", "wrong-audience", "wrong-issuer", "no-subject"],
)
def test_claims_are_checked(key, verifier, overrides, code):
    claims = {k: v for k, v in _claims(**overrides()).items() if v is not None}
    token = jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid})
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.code == code
    assert caught.value.status == 401


def test_a_token_from_another_key_is_refused(verifier):
    stranger = signing_key_from_pem(generate_signing_key_pem())
    with pytest.raises(InvalidToken):
        verifier.verify(issue_token(stranger, SETTINGS, "user-1"))


def test_jku_and_x5u_headers_cannot_bring_their_own_key(verifier):
    attacker = signing_key_from_pem(generate_signing_key_pem())
    token = jwt.encode(
        _claims(),
        attacker.private_key,
        algorithm="EdDSA",
        headers={"kid": attacker.kid, "jku": "http://127.0.0.1:1/jwks.json", "x5u": "http://127.0.0.1:1/x"},
    )
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_a_token_signed_by_the_right_key_but_a_lying_kid_is_refused(key, verifier):
    token = jwt.encode(_claims(), key.private_key, algorithm="EdDSA", headers={"kid": "other"})
    with pytest.raises(InvalidToken):
        verifier.verify(token)
