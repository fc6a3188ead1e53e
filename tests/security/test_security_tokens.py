"""Forged and broken tokens against the api's real verification path: the api behind
the gateway checks every bearer token with the keys it fetches from the running auth
service's JWKS. Each forgery differs from a token the api accepts (the control) only
where the case says."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from datetime import UTC, datetime

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.tokens import SigningKey, generate_signing_key_pem, public_jwk, signing_key_from_pem
from tests.support.client import PASSWORD
from tests.support.tokens import b64, hmac_signer, raw, signed, token_claims

pytestmark = pytest.mark.security

ATTACKER = signing_key_from_pem(generate_signing_key_pem())
# PyJWT's JWKS client refetches for an unknown kid at most once per 30 s.
JWKS_REFETCH_COOLDOWN_SECONDS = 30


@pytest.fixture
def published_key(gateway) -> dict:
    """The stack's public key as an attacker gets it: from the JWKS, through the gateway."""
    keys = gateway.get("/auth/.well-known/jwks.json").json()["keys"]
    assert len(keys) == 1
    return keys[0]


def _forgeries(key: SigningKey, jwk: dict, settings, subject: str) -> dict[str, str]:
    claims = token_claims(settings, subject)
    public_pem = key.public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    raw_public = base64.urlsafe_b64decode(jwk["x"] + "==")
    real = signed(key, claims)
    other_real = signed(key, token_claims(settings, str(uuid.uuid4())))
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    attacker_jwk = public_jwk(ATTACKER.public_key)
    now = int(datetime.now(UTC).timestamp())
    return {
        # alg none, however spelt, with the real kid
        "alg none": raw({"alg": "none", "typ": "JWT", "kid": key.kid}, claims),
        "alg None": raw({"alg": "None", "kid": key.kid}, claims),
        "alg NONE with a signature": raw({"alg": "NONE", "kid": key.kid}, claims, lambda d: b"x"),
        "no alg": raw({"kid": key.kid}, claims, lambda d: b"x"),
        # HMAC keyed with what is public
        "HS256 keyed with the public PEM": raw(
            {"alg": "HS256", "kid": key.kid}, claims, hmac_signer(public_pem)
        ),
        "HS256 keyed with the raw public key": raw(
            {"alg": "HS256", "kid": key.kid}, claims, hmac_signer(raw_public)
        ),
        "HS256 keyed with the JWK text": raw(
            {"alg": "HS256", "kid": key.kid}, claims, hmac_signer(json.dumps(jwk).encode())
        ),
        "HS512 keyed with the public PEM": raw(
            {"alg": "HS512", "kid": key.kid}, claims, hmac_signer(public_pem, hashlib.sha512)
        ),
        # other asymmetric algorithms, the real kid
        "RS256 by another key": jwt.encode(claims, rsa_key, algorithm="RS256", headers={"kid": key.kid}),
        "ES256 by another key": jwt.encode(claims, ec_key, algorithm="ES256", headers={"kid": key.kid}),
        # the real key, claims the api must refuse
        "expired": signed(key, token_claims(settings, subject, iat=now - 7200, nbf=now - 7200, exp=now - 60)),
        "not yet valid": signed(key, token_claims(settings, subject, nbf=now + 300)),
        "issued in the future": signed(key, token_claims(settings, subject, iat=now + 300)),
        "wrong audience": signed(key, token_claims(settings, subject, aud="idrl-admin")),
        "audience list without ours": signed(
            key, token_claims(settings, subject, aud=["idrl-admin", "other"])
        ),
        "wrong issuer": signed(key, token_claims(settings, subject, iss="https://evil.example")),
        "no exp": signed(key, token_claims(settings, subject, exp=None)),
        "no aud": signed(key, token_claims(settings, subject, aud=None)),
        "no iss": signed(key, token_claims(settings, subject, iss=None)),
        "no sub": signed(key, token_claims(settings, None)),
        "sub not a user id": signed(key, token_claims(settings, "admin")),
        "exp as text": signed(key, token_claims(settings, subject, exp="never")),
        # signatures that are not the real key's over this token
        "tampered signature": real[:-2] + ("A" if real[-2] != "A" else "B") + real[-1],
        "spliced signature": real.rsplit(".", 1)[0] + "." + other_real.rsplit(".", 1)[1],
        "tampered payload": ".".join(
            [
                real.split(".")[0],
                b64(json.dumps(token_claims(settings, str(uuid.uuid4()))).encode()),
                real.split(".")[2],
            ]
        ),
        # keys the api does not have
        "unknown kid": signed(ATTACKER, claims),
        "attacker key with the real kid": jwt.encode(
            claims, ATTACKER.private_key, algorithm="EdDSA", headers={"kid": key.kid}
        ),
        "kid path traversal": signed(ATTACKER, claims, kid="../../../../etc/passwd"),
        "kid empty": signed(ATTACKER, claims, kid=""),
        "kid a number": raw({"alg": "EdDSA", "kid": 7}, claims, lambda d: ATTACKER.private_key.sign(d)),
        "kid null": raw({"alg": "EdDSA", "kid": None}, claims, lambda d: ATTACKER.private_key.sign(d)),
        "kid long": signed(ATTACKER, claims, kid="k" * 2500),
        "kid SQL": signed(ATTACKER, claims, kid="' OR '1'='1"),
        # the key inside the token
        "embedded jwk": signed(ATTACKER, claims, jwk=attacker_jwk),
        "embedded jwk, real kid": jwt.encode(
            claims, ATTACKER.private_key, algorithm="EdDSA", headers={"kid": key.kid, "jwk": attacker_jwk}
        ),
        # garbage
        "two parts": real.rsplit(".", 1)[0],
        "four parts": real + ".e30",
        "not base64": "%%%.%%%.%%%",
        "header not JSON": b64(b"not json") + "." + real.split(".", 1)[1],
    }


def _header_injections(key: SigningKey, settings, subject: str, attacker_url: str) -> dict[str, str]:
    claims = token_claims(settings, subject)
    return {
        "jku to the attacker": signed(ATTACKER, claims, jku=f"{attacker_url}/jwks.json"),
        "x5u to the attacker": signed(ATTACKER, claims, x5u=f"{attacker_url}/cert.pem"),
        "jku and x5u, real kid": jwt.encode(
            claims,
            ATTACKER.private_key,
            algorithm="EdDSA",
            headers={"kid": key.kid, "jku": f"{attacker_url}/jwks.json", "x5u": f"{attacker_url}/cert.pem"},
        ),
        "jku, attacker kid equal to the real one": jwt.encode(
            claims,
            ATTACKER.private_key,
            algorithm="EdDSA",
            headers={"kid": key.kid, "jku": f"{attacker_url}/jwks.json"},
        ),
    }


def _refused(gateway, token: str, task_id: str) -> list[str]:
    """Why each request with ``token`` was not a plain 401 (empty: all were)."""
    problems = []
    headers = {"Authorization": f"Bearer {token}"}
    for method, path, body in (
        ("GET", "/tasks", None),
        ("GET", f"/tasks/{task_id}", None),
        ("POST", "/tasks", {"url": "https://videos.league.example/run.mp4"}),
        ("DELETE", f"/tasks/{task_id}", None),
    ):
        response = gateway.request(method, path, headers=headers, json=body)
        if response.status_code != 401:
            problems.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
        elif not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
            problems.append(f"{method} {path}: 401 without a Bearer challenge")
    return problems


def _api_jwks_fetch_lines(local_stack) -> list[str]:
    # The api's JWKS client is urllib; a browser or test fetching the JWKS is not.
    log = (local_stack.logs_dir / "auth.log").read_text(errors="replace")
    return [line for line in log.splitlines() if "/.well-known/jwks.json" in line and "Python-urllib" in line]


def _jwks_fetches(local_stack) -> int:
    return len(_api_jwks_fetch_lines(local_stack))


def _wait_out_the_refetch_cooldown(local_stack) -> None:
    """Until every api process is past the cooldown of its last JWKS fetch, so the first
    unknown kid it sees may refetch. Every successful fetch starts PyJWT's cooldown, and
    each one is in auth's access log, stamped to the second when it was answered: waiting
    the cooldown (and a second for that rounding, and one more) past the latest of them
    is past every process's cooldown. No fetch yet: nothing to wait out."""
    stamps = [
        datetime.strptime(match.group(1), "%d/%b/%Y:%H:%M:%S %z")
        for line in _api_jwks_fetch_lines(local_stack)
        if (match := re.search(r"\[([^\]]+)\]", line))
    ]
    if stamps:
        ends = max(stamps).timestamp() + JWKS_REFETCH_COOLDOWN_SECONDS + 2
        time.sleep(max(0.0, ends - time.time()))


# First in the module: the forgeries below make the api refetch its keys, and this test
# would otherwise wait out the cooldown those fetches start (on a stack that earlier
# tests used, its keys were fetched long ago and there is nothing left to wait out).
def test_a_flood_of_unknown_kids_refetches_the_keys_at_most_once_per_api_process(
    gateway, local_stack, athlete
):
    claims = token_claims(local_stack.settings, athlete.id)
    # The api processes hold the keys (a fresh stack fetches them now), so what the flood
    # makes them fetch is a refetch for an unknown kid, not their first fetch.
    for _ in range(2 * local_stack.stack.config.gunicorn_workers):
        assert gateway.get("/tasks", user=athlete).status_code == 200
    # Past the cooldown of any earlier fetch, so the first unknown kid may refetch.
    _wait_out_the_refetch_cooldown(local_stack)
    before = _jwks_fetches(local_stack)

    statuses = []
    for _ in range(40):
        stranger = signing_key_from_pem(generate_signing_key_pem())
        response = gateway.get("/tasks", headers={"Authorization": f"Bearer {signed(stranger, claims)}"})
        statuses.append((response.status_code, response.json()["error"]["code"]))

    fetched = _jwks_fetches(local_stack) - before
    assert set(statuses) == {(401, "invalid_token")}
    # Each api process refetched once at most (then its cooldown holds); 40 forged kids
    # never became 40 requests to the auth service.
    api_processes = local_stack.stack.config.gunicorn_workers
    assert 1 <= fetched <= api_processes
    # And a real token still works right after the flood.
    assert gateway.get("/tasks", user=athlete).status_code == 200


def test_the_control_token_built_like_the_forgeries_is_accepted(gateway, stack_key, local_stack, athlete):
    # Without this, every refusal below could come from a broken forging harness.
    token = signed(stack_key, token_claims(local_stack.settings, athlete.id))
    assert gateway.get("/tasks", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_every_forgery_is_refused_with_401(gateway, stack_key, published_key, local_stack, athlete):
    assert published_key["kid"] == stack_key.kid
    task_id = gateway.post(
        "/tasks", user=athlete, json={"url": "https://videos.league.example/run.mp4"}
    ).json()["id"]
    forgeries = _forgeries(stack_key, published_key, local_stack.settings, athlete.id)

    problems = {
        name: found for name, token in forgeries.items() if (found := _refused(gateway, token, task_id))
    }

    assert problems == {}
    # None of them touched the task.
    assert gateway.get(f"/tasks/{task_id}", user=athlete).json()["status"] in {
        "queued",
        "processing",
        "failed",
    }


def test_jku_and_x5u_headers_never_make_the_api_fetch_a_key(
    gateway, stack_key, local_stack, athlete, source_server
):
    source_server.files["/jwks.json"] = json.dumps({"keys": [public_jwk(ATTACKER.public_key)]}).encode()
    source_server.files["/cert.pem"] = b"-----BEGIN CERTIFICATE-----\n"
    injections = _header_injections(stack_key, local_stack.settings, athlete.id, source_server.base_url)

    problems = {
        name: found
        for name, token in injections.items()
        if (found := _refused(gateway, token, str(uuid.uuid4())))
    }

    assert problems == {}
    assert source_server.requests == []


def test_a_token_ended_by_logout_through_the_gateway_is_refused_by_every_api_process(
    gateway, local_stack, athlete
):
    other_device = gateway.post("/auth/login", json={"email": athlete.email, "password": PASSWORD})
    ended = [athlete.token, other_device.json()["token"]]
    # Each api process that answers now reads and keeps the user's cutoff (none yet).
    for _ in range(4):
        assert gateway.get("/tasks", user=athlete).status_code == 200

    assert gateway.post("/auth/logout", user=athlete).status_code == 204
    # Past the longest an api process may keep the cutoff it read (the documented window).
    time.sleep(local_stack.settings.token_cutoff_cache_seconds + 1)

    answers = [
        gateway.get("/tasks", headers={"Authorization": f"Bearer {token}"})
        for token in ended * 2 * local_stack.stack.config.gunicorn_workers
    ]
    assert {(answer.status_code, answer.json()["error"]["code"]) for answer in answers} == {
        (401, "session_ended")
    }
    assert all(answer.headers["WWW-Authenticate"].startswith("Bearer") for answer in answers)
    relogin = gateway.post("/auth/login", json={"email": athlete.email, "password": PASSWORD})
    assert (
        gateway.get("/tasks", headers={"Authorization": f"Bearer {relogin.json()['token']}"}).status_code
        == 200
    )
