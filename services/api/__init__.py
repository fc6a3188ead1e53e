"""The tasks API: submit a video by URL or upload, list, get, download, cancel and delete.

Run it with ``gunicorn --config=services/api/gunicorn_config.py --worker-class gthread
'services.api:create_app()'`` (no
``--preload``: each worker builds its own engine and starts its own outbox relay thread).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from shared import db, web
from shared.config import Settings, get_settings
from shared.events import Publisher
from shared.tokens import TokenVerifier


def create_app(settings: Settings | None = None, *, token_verifier: TokenVerifier | None = None) -> Flask:
    """Build the api application (``gunicorn 'services.api:create_app()'``).

    Tokens are verified against the auth service's JWKS (``AUTH_JWKS_URL``); a test may
    pass its own ``token_verifier`` (the same class, holding a test key). The entry point
    gunicorn calls takes no arguments, so production always verifies against the JWKS.
    """
    settings = settings or get_settings()
    settings.require_production("api")

    app = Flask(__name__, static_folder=None)
    # The default for every route; POST /tasks raises it for multipart uploads only.
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_json_bytes
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.trusted_proxy_hops)  # type: ignore[method-assign]
    app.extensions["settings"] = settings
    app.extensions["engine"] = engine = db.create_engine(settings)
    app.extensions["token_verifier"] = token_verifier or TokenVerifier(
        settings, jwks_url=settings.auth_jwks_url
    )
    app.extensions["publisher"] = publisher = Publisher(settings)

    web.init_app(app)
    from services.api.identity import add_bearer_challenge
    from services.api.objects import ping_storage
    from services.api.openapi import document
    from services.api.outbox import OutboxRelay
    from services.api.routes import tasks
    from services.api.webhooks import webhooks

    app.after_request(add_bearer_challenge)
    app.register_blueprint(tasks)
    app.register_blueprint(webhooks)
    app.register_blueprint(document)
    app.register_blueprint(
        web.health_blueprint({"database": lambda: db.ping(engine), "storage": lambda: ping_storage(settings)})
    )

    relay = OutboxRelay(engine, publisher, settings)
    app.extensions["outbox_relay"] = relay
    if settings.outbox_relay_enabled:
        relay.start()
    return app


def close_app(app: Flask) -> None:
    """Stop what ``create_app`` started: the outbox relay thread and the connection pool
    (for an app that ends before its process does, as in tests)."""
    app.extensions["outbox_relay"].stop()
    app.extensions["engine"].dispose()
