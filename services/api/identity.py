"""Who is calling: the user id in the bearer token, checked by the one token verifier."""

from __future__ import annotations

import uuid

from flask import Response, current_app, request

from shared.errors import Unauthorized
from shared.tokens import InvalidToken

# A token is a few hundred bytes; anything far longer is refused before it is parsed.
_MAX_TOKEN_CHARS = 4096


def current_owner() -> uuid.UUID:
    """The calling user's id; 401 when the token is missing, malformed, expired or foreign."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("send an access token: Authorization: Bearer <token>", code="missing_token")
    if len(token) > _MAX_TOKEN_CHARS:
        raise InvalidToken("malformed token")
    claims = current_app.extensions["token_verifier"].verify(token)
    try:
        return uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise InvalidToken("the token does not name a user") from None


def add_bearer_challenge(response: Response) -> Response:
    """Every 401 tells the client which scheme to use (RFC 6750)."""
    if response.status_code == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="idrl"'
    return response
