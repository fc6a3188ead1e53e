"""Who is calling: the user id in the bearer token, checked by the one token verifier,
and the user's session cutoff (a token issued before a logout or password change is
refused; docs/api.md, "Sessions")."""

from __future__ import annotations

import uuid

from flask import Flask, request

from services.api import deps
from shared.config import Settings
from shared.sessions import SessionCutoffs
from shared.tokens import InvalidToken, add_bearer_challenge, bearer_token


def init_app(app: Flask, settings: Settings) -> None:
    """Give the app its view of the users' session cutoffs (read once per user and
    kept for TOKEN_CUTOFF_CACHE_SECONDS) and the Bearer challenge on every 401."""
    app.extensions[deps.SESSION_CUTOFFS] = SessionCutoffs(
        app.extensions[deps.ENGINE], settings.token_cutoff_cache_seconds
    )
    app.after_request(add_bearer_challenge)


def current_owner() -> uuid.UUID:
    """The calling user's id; 401 when the token is missing, malformed, expired or
    foreign, its user does not exist, or its session has ended."""
    token = bearer_token(request.headers.get("Authorization"))
    claims = deps.token_verifier().verify(token)
    try:
        owner = uuid.UUID(str(claims["sub"]))
    except ValueError:
        raise InvalidToken("the token does not name a user") from None
    deps.session_cutoffs().require_live(owner, claims)
    return owner
