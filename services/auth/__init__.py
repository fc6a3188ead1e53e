"""The auth service: sign-up, login, and the public keys that verify its tokens."""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import db, web
from shared.config import Settings, get_settings
from shared.logging import configure_logging
from shared.tokens import load_signing_key


def create_app(settings: Settings | None = None) -> Flask:
    """Build the auth application (``gunicorn 'services.auth:create_app()'``)."""
    settings = settings or get_settings()
    settings.require_production("token_issuer", "token_audience")
    configure_logging("auth", settings.log_level)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_json_bytes
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)
    app.extensions["settings"] = settings
    app.extensions["engine"] = engine = db.create_engine(settings)
    app.extensions["signing_key"] = load_signing_key(settings)

    web.init_app(app)
    from services.auth.routes import auth

    app.register_blueprint(auth)
    app.register_blueprint(web.health_blueprint({"database": lambda: db.ping(engine)}))
    return app
