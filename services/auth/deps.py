"""What the auth service's request handlers depend on, as the app factory built it.

:func:`services.auth.create_app` builds each dependency once and puts it in
``app.extensions`` under the key named here; handlers reach it through these typed
accessors (inside a request or app context) instead of reading the dictionary.
"""

from __future__ import annotations

from typing import cast

from flask import current_app
from sqlalchemy.engine import Engine

from shared.config import Settings
from shared.tokens import SigningKey, TokenVerifier

SETTINGS = "settings"
ENGINE = "engine"
SIGNING_KEY = "signing_key"
JWKS = "jwks"
TOKEN_VERIFIER = "token_verifier"


def settings() -> Settings:
    return cast(Settings, current_app.extensions[SETTINGS])


def engine() -> Engine:
    return cast(Engine, current_app.extensions[ENGINE])


def signing_key() -> SigningKey:
    return cast(SigningKey, current_app.extensions[SIGNING_KEY])


def jwks() -> dict[str, list[dict[str, str]]]:
    """The JSON Web Key Set auth publishes (its signing key and any previous ones)."""
    return cast(dict[str, list[dict[str, str]]], current_app.extensions[JWKS])


def token_verifier() -> TokenVerifier:
    return cast(TokenVerifier, current_app.extensions[TOKEN_VERIFIER])
