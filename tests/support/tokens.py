"""Tokens built by hand, for the tests that check what the verifier refuses: claims,
signatures with any key or none, and headers as an attacker would write them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime

import jwt

from shared.config import Settings
from shared.tokens import SigningKey


def b64(data: bytes) -> str:
    """Base64url without padding, as JWTs encode their parts."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token_claims(settings: Settings, subject: str | None = "user-1", **changes) -> dict:
    """Claims a token of ``settings`` carries, valid for an hour from now; ``changes``
    replace them, and a claim set to None is left out."""
    now = int(datetime.now(UTC).timestamp())
    values = {
        "sub": subject,
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
    }
    values.update(changes)
    return {name: value for name, value in values.items() if value is not None}


def signed(key: SigningKey, claims: dict, **header) -> str:
    """``claims`` signed with ``key`` (EdDSA) under its kid, ``header`` added or replacing."""
    return jwt.encode(claims, key.private_key, algorithm="EdDSA", headers={"kid": key.kid, **header})


def raw(header: dict, claims: dict, sign: Callable[[bytes], bytes] | None = None) -> str:
    """A token of exactly ``header`` and ``claims``, signed by ``sign`` (empty signature without)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = b64(sign(signing_input.encode())) if sign else ""
    return f"{signing_input}.{signature}"


def hmac_signer(secret: bytes, digest=hashlib.sha256) -> Callable[[bytes], bytes]:
    """A ``sign`` for :func:`raw`: HMAC keyed with ``secret``."""
    return lambda data: hmac.new(secret, data, digest).digest()
