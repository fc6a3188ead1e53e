"""The auth service: sign-up, login, logout, password change, and the public keys that
verify its tokens."""

from __future__ import annotations

import logging

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from services.auth import deps
from shared import db, web
from shared.config import Settings, get_settings
from shared.tokens import TokenVerifier, jwks_document, load_signing_key, public_keys_from_pem

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the auth application (``gunicorn 'services.auth:create_app()'``)."""
    settings = settings or get_settings()
    settings.require_production("auth")

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_json_bytes
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)  # type: ignore[method-assign]
    # Everything a handler uses, made once here and reached through services.auth.deps.
    app.extensions[deps.SETTINGS] = settings
    app.extensions[deps.SIGNING_KEY] = signing_key = load_signing_key(settings)
    # Keys of a rotation still under way: published, never used to sign (docs/deploy.md).
    previous_keys = public_keys_from_pem(settings.token_previous_public_keys)
    app.extensions[deps.JWKS] = jwks = jwks_document(signing_key.public_key, previous_keys)
    # Logout and password change take the tokens auth itself issued: the keys it publishes.
    app.extensions[deps.TOKEN_VERIFIER] = TokenVerifier(
        settings, public_keys=[signing_key.public_key, *previous_keys]
    )
    log.info(
        "token keys",
        extra={"signing_kid": signing_key.kid, "published_kids": [key["kid"] for key in jwks["keys"]]},
    )
    app.extensions[deps.ENGINE] = engine = db.create_engine(settings)

    web.init_app(app)
    from services.auth.routes import auth

    app.register_blueprint(auth)
    app.register_blueprint(web.health_blueprint({"database": lambda: db.ping(engine)}))
    return app
