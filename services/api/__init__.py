"""The tasks API: submit a video by URL or upload, list, get, download, cancel and delete.

Run it with ``gunicorn --config=services/api/gunicorn_config.py --worker-class gthread
'services.api:create_app()'`` (no
``--preload``: each worker builds its own engine and starts its own outbox relay thread).
"""

from __future__ import annotations

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from services.api import deps
from shared import db, storage, web
from shared.config import Settings, get_settings
from shared.pubsub import Publisher
from shared.tokens import TokenVerifier
from shared.webhooks import SecretBox


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
    # Everything a handler uses, made once here and reached through services.api.deps.
    app.extensions[deps.SETTINGS] = settings
    app.extensions[deps.ENGINE] = engine = db.create_engine(settings)
    app.extensions[deps.TOKEN_VERIFIER] = token_verifier or TokenVerifier(
        settings, jwks_url=settings.auth_jwks_url
    )
    app.extensions[deps.PUBLISHER] = publisher = Publisher(settings)
    app.extensions[deps.STORAGE] = storage_client = storage.create_client()
    app.extensions[deps.WEBHOOK_SECRETS] = SecretBox(settings)

    web.init_app(app)
    from services.api import identity
    from services.api.objects import ping_storage
    from services.api.openapi import document
    from services.api.routes import tasks
    from services.api.tus import tus
    from services.api.tus_sweep import UploadSweep
    from services.api.webhooks import webhooks
    from shared.outbox import OutboxRelay

    identity.init_app(app, settings)
    app.register_blueprint(tasks)
    app.register_blueprint(tus)
    app.register_blueprint(webhooks)
    app.register_blueprint(document)
    app.register_blueprint(
        web.health_blueprint(
            {"database": lambda: db.ping(engine), "storage": lambda: ping_storage(storage_client, settings)}
        )
    )

    relay = OutboxRelay(engine, publisher, settings)
    app.extensions[deps.OUTBOX_RELAY] = relay
    if settings.outbox_relay_enabled:
        relay.start()
    sweep = UploadSweep(engine, storage_client, settings.tus_sweep_interval_seconds)
    app.extensions[deps.UPLOAD_SWEEP] = sweep
    sweep.start()
    return app


def close_app(app: Flask) -> None:
    """Stop what ``create_app`` started: the outbox relay and upload sweep threads, the
    connection pool and the Cloud SQL connector, if the engine has one (for an app that
    ends before its process does, as in tests)."""
    app.extensions[deps.OUTBOX_RELAY].stop()
    app.extensions[deps.UPLOAD_SWEEP].stop()
    db.close_engine(app.extensions[deps.ENGINE])
