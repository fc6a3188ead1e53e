"""The one token verifier: every way a token can be wrong is refused."""

import base64
import hashlib
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from shared.config import Settings
from shared.errors import Unauthorized
from shared.sessions import ended
from shared.tokens import (
    InvalidToken,
    TokenVerifier,
    bearer_token,
    generate_signing_key_pem,
    issue_token,
    jwks_document,
    public_jwk,
    public_key_pem,
    public_keys_from_pem,
    signing_key_from_pem,
)
from tests.support.tokens import b64, hmac_signer, raw, signed, token_claims

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SETTINGS = Settings(token_issuer="idrl-auth", token_audience="idrl-api", token_ttl_seconds=3600)


@pytest.fixture(scope="module")
def key():
    return signing_key_from_pem(generate_signing_key_pem())


@pytest.fixture(scope="module")
def verifier(key):
    return TokenVerifier(SETTINGS, public_keys=[key.public_key])


def test_a_fresh_token_verifies_and_names_its_user(key, verifier):
    token = issue_token(key, SETTINGS, "user-42")
    claims = verifier.verify(token)
    assert claims["sub"] == "user-42"
    assert claims["exp"] - int(claims["iat"]) == 3600
    assert jwt.get_unverified_header(token)["kid"] == key.kid


def test_the_kid_is_the_rfc7638_thumbprint(key):
    jwk = public_jwk(key.public_key)
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": jwk["x"]}, separators=(",", ":"))
    assert jwk["kid"] == b64(hashlib.sha256(canonical.encode()).digest())
    assert jwk["alg"] == "EdDSA" and "d" not in jwk


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "a.b", "Bearer x.y.z"])
def test_garbage_is_refused(verifier, token):
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_alg_none_is_refused(key, verifier):
    token = raw({"alg": "none", "typ": "JWT", "kid": key.kid}, token_claims(SETTINGS))
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_hs256_signed_with_the_public_key_is_refused(key, verifier):
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (public_pem, base64.urlsafe_b64decode(public_jwk(key.public_key)["x"] + "==")):
        token = raw(
            {"alg": "HS256", "typ": "JWT", "kid": key.kid}, token_claims(SETTINGS), hmac_signer(secret)
        )
        with pytest.raises(InvalidToken):
            verifier.verify(token)


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
    token = signed(key, token_claims(SETTINGS, **overrides()))
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
    token = signed(
        attacker, token_claims(SETTINGS), jku="http://127.0.0.1:1/jwks.json", x5u="http://127.0.0.1:1/x"
    )
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_a_token_signed_by_the_right_key_but_a_lying_kid_is_refused(key, verifier):
    token = signed(key, token_claims(SETTINGS), kid="other")
    with pytest.raises(InvalidToken):
        verifier.verify(token)


# --- previous keys of a rotation ------------------------------------------------------------


def _new_key():
    return signing_key_from_pem(generate_signing_key_pem())


def _raw(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@pytest.mark.parametrize("text", ["", "   \n", "\\n"], ids=["empty", "blank", "escaped-blank"])
def test_no_previous_keys(text):
    assert public_keys_from_pem(text) == []


def test_one_and_two_previous_keys_are_read_in_order():
    first, second = _new_key(), _new_key()
    (one,) = public_keys_from_pem(public_key_pem(first.public_key))
    assert _raw(one) == _raw(first.public_key)
    two = public_keys_from_pem(public_key_pem(first.public_key) + "\n" + public_key_pem(second.public_key))
    assert [_raw(key) for key in two] == [_raw(first.public_key), _raw(second.public_key)]


def test_previous_keys_written_on_one_line_with_escapes_as_an_env_file_carries_them():
    first, second = _new_key(), _new_key()
    text = public_key_pem(first.public_key) + public_key_pem(second.public_key)
    # What Terraform writes into the container's env file: one line, "\n" as two characters.
    line = "TOKEN_PREVIOUS_PUBLIC_KEYS=" + text.replace("\n", "\\n")
    assert "\n" not in line
    value = line.partition("=")[2]
    keys = public_keys_from_pem(Settings(token_previous_public_keys=value).token_previous_public_keys)
    assert [_raw(key) for key in keys] == [_raw(first.public_key), _raw(second.public_key)]
    # Windows line ends survive too.
    (crlf,) = public_keys_from_pem(public_key_pem(first.public_key).replace("\n", "\r\n"))
    assert _raw(crlf) == _raw(first.public_key)


def _rsa_public_pem() -> str:
    return (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (lambda: generate_signing_key_pem().decode(), "block 1 is a private key"),
        (
            lambda: public_key_pem(_new_key().public_key) + generate_signing_key_pem().decode(),
            "block 2 is a private key",
        ),
        (lambda: _rsa_public_pem(), "block 1 is not an Ed25519 public key"),
        (
            lambda: "-----BEGIN PUBLIC KEY-----\nbm90IGEga2V5\n-----END PUBLIC KEY-----\n",
            "block 1 is not an Ed25519 public key",
        ),
        (lambda: "garbage", "not a PEM block"),
        (lambda: public_key_pem(_new_key().public_key) + "and some words", "not a PEM block"),
        (
            lambda: public_key_pem(_new_key().public_key).replace("-----END PUBLIC KEY-----", ""),
            "not a PEM block",
        ),
    ],
    ids=["private", "private-second", "rsa", "not-a-key", "garbage", "trailing-text", "unterminated"],
)
def test_anything_but_ed25519_public_keys_stops_the_process(text, message):
    value = text()
    with pytest.raises(SystemExit) as stopped:
        public_keys_from_pem(value)
    assert message in str(stopped.value)
    assert "TOKEN_PREVIOUS_PUBLIC_KEYS" in str(stopped.value)
    for line in value.splitlines():  # the text, maybe a private key, is never echoed
        if line.strip() and not line.startswith("-----"):
            assert line.strip() not in str(stopped.value)


def test_the_jwks_holds_the_current_key_first_then_previous_ones_each_once(key):
    first, second = _new_key(), _new_key()
    document = jwks_document(
        key.public_key, [first.public_key, key.public_key, second.public_key, first.public_key]
    )
    kids = [jwk["kid"] for jwk in document["keys"]]
    assert kids == [key.kid, first.kid, second.kid]
    assert len(set(kids)) == 3
    assert document["keys"][0] == public_jwk(key.public_key)
    for jwk in document["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
    assert jwks_document(key.public_key) == {"keys": [public_jwk(key.public_key)]}


def test_a_verifier_holding_the_published_keys_accepts_current_and_previous_tokens(key):
    previous, stranger = _new_key(), _new_key()
    document = jwks_document(key.public_key, public_keys_from_pem(public_key_pem(previous.public_key)))
    published = [jwt.PyJWK(jwk).key for jwk in document["keys"]]
    verifier = TokenVerifier(SETTINGS, public_keys=published)
    assert verifier.verify(issue_token(key, SETTINGS, "user-1"))["sub"] == "user-1"
    assert verifier.verify(issue_token(previous, SETTINGS, "user-2"))["sub"] == "user-2"
    with pytest.raises(InvalidToken):
        verifier.verify(issue_token(stranger, SETTINGS, "user-3"))


def _tokens_cli(*arguments: str, stdin: bytes = b"") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.tokens", *arguments],
        input=stdin,
        capture_output=True,
        cwd=PROJECT_ROOT,
        timeout=60,
    )


def test_the_cli_prints_the_public_half_of_a_private_key_file(tmp_path):
    path = tmp_path / "signing.pem"
    assert _tokens_cli("generate", str(path)).returncode == 0
    key = signing_key_from_pem(path.read_bytes())
    result = _tokens_cli("public-key", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode() == public_key_pem(key.public_key)
    assert result.stderr.decode().strip() == f"kid {key.kid}"
    (parsed,) = public_keys_from_pem(result.stdout.decode())
    assert public_jwk(parsed)["kid"] == key.kid

    from_stdin = _tokens_cli("public-key", "-", stdin=path.read_bytes())
    assert from_stdin.returncode == 0 and from_stdin.stdout == result.stdout


@pytest.mark.parametrize(
    "arguments",
    [("public-key",), ("public-key", "-"), ("rotate", "x")],
    ids=["no-path", "garbage-on-stdin", "unknown-command"],
)
def test_the_cli_refuses_bad_use_with_a_message_not_a_traceback(arguments):
    result = _tokens_cli(*arguments, stdin=b"garbage")
    assert result.returncode != 0
    assert b"Traceback" not in result.stderr
    assert b"usage:" in result.stderr or b"not an unencrypted PEM private key" in result.stderr


@pytest.mark.parametrize(
    "pem, reason",
    [
        (
            b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWJ1dC1icm9rZW4=\n-----END PRIVATE KEY-----\n",
            "is not an unencrypted PEM private key",
        ),
        (b"not a key at all: secret-but-broken", "is not an unencrypted PEM private key"),
        (
            rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            "must be an Ed25519 private key",
        ),
    ],
    ids=["broken-block", "garbage", "rsa"],
)
def test_a_bad_signing_key_stops_the_service_with_a_message_that_does_not_repeat_it(pem, reason):
    with pytest.raises(SystemExit) as stopped:
        signing_key_from_pem(pem)
    message = str(stopped.value.code)
    assert message == f"the token signing key {reason}"
    assert "secret-but-broken" not in message and "c2VjcmV0" not in message


# --- issue time and the session cutoff ------------------------------------------------------


def test_iat_is_given_to_the_microsecond_and_nbf_exp_in_whole_seconds(key, verifier):
    issued = datetime(2026, 12, 1, 12, 0, 5, 123456, tzinfo=UTC)
    claims = jwt.decode(issue_token(key, SETTINGS, "user-1", now=issued), options={"verify_signature": False})
    assert claims["iat"] == issued.timestamp()
    assert claims["nbf"] == int(issued.timestamp()) and claims["exp"] == claims["nbf"] + 3600
    assert verifier.verify(issue_token(key, SETTINGS, "user-1"))["sub"] == "user-1"


@pytest.mark.parametrize(
    "offset_microseconds, is_ended",
    [(-1_000_000, True), (-1, True), (0, False), (1, False), (1_000_000, False)],
)
def test_a_token_is_ended_only_when_issued_strictly_before_the_cutoff(key, offset_microseconds, is_ended):
    cutoff = datetime(2026, 12, 1, 12, 0, 5, 500000, tzinfo=UTC)
    token = issue_token(key, SETTINGS, "user-1", now=cutoff + timedelta(microseconds=offset_microseconds))
    claims = jwt.decode(token, options={"verify_signature": False})
    assert ended(claims, cutoff) is is_ended
    assert ended(claims, None) is False


def test_a_whole_second_iat_from_before_the_change_is_ended_within_its_second():
    # Tokens issued before iat had microseconds: floor of the issue time.
    cutoff = datetime(2026, 12, 1, 12, 0, 5, 500000, tzinfo=UTC)
    assert ended({"iat": int(cutoff.timestamp())}, cutoff) is True
    assert ended({"iat": int(cutoff.timestamp()) + 1}, cutoff) is False


@pytest.mark.parametrize(
    "header, code",
    [
        (None, "missing_token"),
        ("", "missing_token"),
        ("Bearer", "missing_token"),
        ("Bearer   ", "missing_token"),
        ("Basic YWxpY2U6c2VjcmV0", "missing_token"),
        ("Bearer " + "a" * 5000, "invalid_token"),
    ],
)
def test_a_header_without_a_usable_bearer_token_is_401(header, code):
    with pytest.raises(Unauthorized) as refused:
        bearer_token(header)
    assert refused.value.status == 401 and refused.value.code == code


def test_the_bearer_token_is_read_from_its_header():
    assert bearer_token("Bearer a.b.c") == "a.b.c"
    assert bearer_token("bearer  a.b.c ") == "a.b.c"
