"""Access tokens: signing keys, issuing, JWKS and the one verifier every service uses.

Tokens are EdDSA (Ed25519) JWTs with ``sub``, ``iat``, ``nbf``, ``exp``, ``iss``, ``aud``
and a ``kid`` header (the key's RFC 7638 thumbprint). ``iat`` is given to the microsecond
(RFC 7519's NumericDate may be fractional), so it can be compared with a user's session
cutoff (:mod:`shared.sessions`) even within one second; ``nbf`` and ``exp`` are whole seconds. Verification accepts EdDSA only:
``alg: none``, HMAC tokens signed with the public key and keys named by ``jku``/``x5u``
headers are never considered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from flask import Response
from jwt.algorithms import OKPAlgorithm

from shared.config import Settings
from shared.errors import DependencyUnavailable, Unauthorized

ALGORITHM = "EdDSA"
_REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub"]


class InvalidToken(Unauthorized):
    code = "invalid_token"


@dataclass(frozen=True)
class SigningKey:
    private_key: Ed25519PrivateKey
    kid: str

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()


def public_jwk(public_key: Ed25519PublicKey) -> dict[str, str]:
    """The public key as a JWK with ``kid``, ``alg`` and ``use``."""
    jwk = OKPAlgorithm.to_jwk(public_key, as_dict=True)
    thumbprint_input = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"]}, separators=(",", ":"), sort_keys=True
    )
    digest = hashlib.sha256(thumbprint_input.encode()).digest()
    kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    return {**jwk, "kid": kid, "alg": ALGORITHM, "use": "sig"}


def jwks_document(
    current: Ed25519PublicKey, previous: Iterable[Ed25519PublicKey] = ()
) -> dict[str, list[dict[str, str]]]:
    """The JWKS the auth service publishes: the current key first, then the earlier keys
    whose tokens must keep verifying during a rotation, each key once."""
    keys: dict[str, dict[str, str]] = {}
    for key in (current, *previous):
        jwk = public_jwk(key)
        keys.setdefault(jwk["kid"], jwk)
    return {"keys": list(keys.values())}


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    """The public key as PEM text (SubjectPublicKeyInfo), as TOKEN_PREVIOUS_PUBLIC_KEYS
    takes it."""
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----(.*?)-----END \1-----", re.DOTALL)


def public_keys_from_pem(text: str) -> list[Ed25519PublicKey]:
    """The Ed25519 public keys of ``TOKEN_PREVIOUS_PUBLIC_KEYS``: PEM blocks one after
    another, none for empty text.

    Line breaks may also be written as ``\\n`` escapes, because an env file (how the
    instances pass the environment to the container) holds one line per variable. Stops
    the process, naming the block, on anything else: a private key, another kind of key,
    text outside the blocks. The message never repeats the text, which may be a secret.
    """
    text = text.replace("\\n", "\n")
    if _PEM_BLOCK.sub("", text).strip():
        raise SystemExit("TOKEN_PREVIOUS_PUBLIC_KEYS holds text that is not a PEM block")
    keys = []
    for number, block in enumerate(_PEM_BLOCK.finditer(text), start=1):
        label, body = block.group(1), "".join(block.group(2).split())
        where = f"TOKEN_PREVIOUS_PUBLIC_KEYS, block {number}"
        if "PRIVATE" in label:
            raise SystemExit(
                f"{where} is a private key: give its public half "
                "(python -m shared.tokens public-key <private-pem-path>)"
            )
        lines = "\n".join(body[start : start + 64] for start in range(0, len(body), 64))
        try:
            key = serialization.load_pem_public_key(
                f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n".encode()
            )
        except (ValueError, TypeError):
            key = None
        if not isinstance(key, Ed25519PublicKey):
            raise SystemExit(f"{where} is not an Ed25519 public key")
        keys.append(key)
    return keys


def signing_key_from_pem(pem: bytes, source: str = "the token signing key") -> SigningKey:
    """The signing key in ``pem``; stops the process, naming ``source`` but never
    repeating the text (a secret), when it is not an Ed25519 private key."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        raise SystemExit(f"{source} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SystemExit(f"{source} must be an Ed25519 private key")
    return SigningKey(key, public_jwk(key.public_key())["kid"])


def load_signing_key(settings: Settings) -> SigningKey:
    """The signing key from ``TOKEN_SIGNING_KEY`` (PEM), ``TOKEN_SIGNING_KEY_FILE`` or
    ``TOKEN_SIGNING_KEY_SECRET`` (a Secret Manager version); stops the process if none."""
    if settings.token_signing_key:
        return signing_key_from_pem(settings.token_signing_key.encode())
    if settings.token_signing_key_file:
        return signing_key_from_pem(Path(settings.token_signing_key_file).read_bytes())
    if settings.token_signing_key_secret:
        from google.cloud import secretmanager

        client = secretmanager.SecretManagerServiceClient()
        response = client.access_secret_version(name=settings.token_signing_key_secret)
        return signing_key_from_pem(response.payload.data)
    raise SystemExit(
        "no token signing key: set TOKEN_SIGNING_KEY, TOKEN_SIGNING_KEY_FILE or TOKEN_SIGNING_KEY_SECRET"
    )


def generate_signing_key_pem() -> bytes:
    """A new Ed25519 private key, PEM-encoded (PKCS#8)."""
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def issue_token(key: SigningKey, settings: Settings, subject: str, *, now: datetime | None = None) -> str:
    """A signed access token for user ``subject``, valid for ``token_ttl_seconds``."""
    issued = (now or datetime.now(UTC)).timestamp()
    seconds = int(issued)
    claims = {
        "sub": subject,
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "iat": round(issued, 6),
        "nbf": seconds,
        "exp": seconds + settings.token_ttl_seconds,
    }
    return jwt.encode(claims, key.private_key, algorithm=ALGORITHM, headers={"kid": key.kid})


# A token is a few hundred bytes; anything far longer is refused before it is parsed.
_MAX_TOKEN_CHARS = 4096


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 when there is none
    or it is far too long to be one."""
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send an access token: Authorization: Bearer <token>", code="missing_token")
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken("malformed token")
    return token


def add_bearer_challenge(response: Response) -> Response:
    """Every 401 of a route that takes a bearer token tells the client which scheme to
    use (RFC 6750)."""
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="idrl"'
    return response


class TokenVerifier:
    """Checks a bearer token's signature, algorithm, issuer, audience and times.

    Keys come from a JWKS URL or from a fixed list of public keys. The JWKS is cached
    for ``jwks_cache_seconds`` as a whole and fetched again once that has passed, so a key
    auth stopped publishing stops verifying within that time in a process that keeps
    running; a token naming an unknown ``kid`` makes it fetch sooner, at most once per
    30 s (PyJWT's cooldown).
    """

    def __init__(
        self,
        settings: Settings,
        *,
        jwks_url: str | None = None,
        public_keys: list[Ed25519PublicKey] | None = None,
    ) -> None:
        self.issuer = settings.token_issuer
        self.audience = settings.token_audience
        self._static = {public_jwk(k)["kid"]: k for k in public_keys or []}
        self._jwks = (
            # No per-kid cache (cache_keys): PyJWT keeps those keys in an lru_cache that
            # never expires, so a key dropped from the JWKS would verify until a restart.
            jwt.PyJWKClient(
                jwks_url,
                cache_keys=False,
                cache_jwk_set=True,
                lifespan=settings.jwks_cache_seconds,
                timeout=5,
            )
            if jwks_url
            else None
        )

    def _key_for(self, kid: str) -> Ed25519PublicKey:
        if kid in self._static:
            return self._static[kid]
        if self._jwks is None:
            raise InvalidToken("token signed by an unknown key")
        try:
            jwk = self._jwks.get_signing_key(kid)
        except jwt.PyJWKClientConnectionError:
            raise DependencyUnavailable("token keys are unavailable, try again") from None
        except jwt.PyJWKClientError:
            raise InvalidToken("token signed by an unknown key") from None
        if not isinstance(jwk.key, Ed25519PublicKey):
            raise InvalidToken("token signed by an unusable key")
        return jwk.key

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims; :class:`InvalidToken` (401) for any defect."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        if header.get("alg") != ALGORITHM or not isinstance(header.get("kid"), str):
            raise InvalidToken("token algorithm or key id not accepted")
        key = self._key_for(header["kid"])
        try:
            return jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                options={"require": _REQUIRED_CLAIMS},
                leeway=5,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("token expired", code="token_expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"invalid token: {exc}") from None


def _generate_cli(path: str) -> None:
    target = Path(path)
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(generate_signing_key_pem())


def _public_key_cli(path: str) -> None:
    # "-" reads stdin, so a key fetched from Secret Manager need not touch the disk.
    pem = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    key = signing_key_from_pem(pem, source="stdin" if path == "-" else path)
    sys.stdout.write(public_key_pem(key.public_key))
    # On stderr, so stdout stays a clean PEM block: the kid the JWKS will show it under.
    print(f"kid {key.kid}", file=sys.stderr)


_USAGE = """usage: python -m shared.tokens generate <path>
       python -m shared.tokens public-key <private-pem-path | ->"""

if __name__ == "__main__":
    match sys.argv[1:]:
        case ["generate", path]:
            _generate_cli(path)
        case ["public-key", path]:
            _public_key_cli(path)
        case _:
            raise SystemExit(_USAGE)
