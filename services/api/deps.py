"""What the api's request handlers depend on, as the app factory built it.

:func:`services.api.create_app` builds each dependency once and puts it in
``app.extensions`` under the key named here; handlers reach it through these typed
accessors (inside a request or app context) instead of reading the dictionary. A test
may put a stand-in of the same shape under a key: the accessors do not check the type.
"""

from __future__ import annotations

from typing import cast

from flask import current_app
from google.cloud import storage as gcs
from sqlalchemy.engine import Engine

from shared.config import Settings
from shared.pubsub import Publisher
from shared.sessions import SessionCutoffs
from shared.tokens import TokenVerifier
from shared.webhooks import SecretBox

SETTINGS = "settings"
ENGINE = "engine"
PUBLISHER = "publisher"
STORAGE = "storage"
TOKEN_VERIFIER = "token_verifier"
SESSION_CUTOFFS = "session_cutoffs"
OUTBOX_RELAY = "outbox_relay"
UPLOAD_SWEEP = "upload_sweep"
WEBHOOK_SECRETS = "webhook_secrets"


def settings() -> Settings:
    return cast(Settings, current_app.extensions[SETTINGS])


def engine() -> Engine:
    return cast(Engine, current_app.extensions[ENGINE])


def publisher() -> Publisher:
    return cast(Publisher, current_app.extensions[PUBLISHER])


def storage() -> gcs.Client:
    return cast(gcs.Client, current_app.extensions[STORAGE])


def token_verifier() -> TokenVerifier:
    return cast(TokenVerifier, current_app.extensions[TOKEN_VERIFIER])


def session_cutoffs() -> SessionCutoffs:
    return cast(SessionCutoffs, current_app.extensions[SESSION_CUTOFFS])


def webhook_secrets() -> SecretBox:
    return cast(SecretBox, current_app.extensions[WEBHOOK_SECRETS])
