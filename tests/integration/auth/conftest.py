"""Auth served over HTTP on one loopback address, and real api processes verifying its
tokens with its JWKS exactly as in production (no injected verifier)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from services.api import close_app as close_api
from services.api import create_app as create_api
from services.auth import create_app as create_auth
from shared.config import Settings
from tests.support.auth import JWKS_CACHE_SECONDS, AuthServer
from tests.support.clock import start_early_in_a_minute


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    with AuthServer() as server:
        yield server


@pytest.fixture
def make_auth(settings: Settings) -> Iterator[Callable[..., Flask]]:
    """A freshly started auth service with these settings on the test's database."""
    apps = []

    def make(**overrides) -> Flask:
        app = create_auth(settings.model_copy(update=overrides))
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["engine"].dispose()


@pytest.fixture
def make_api(settings: Settings, auth_server: AuthServer) -> Iterator[Callable[..., Flask]]:
    """An api verifying with auth's JWKS, which it caches for JWKS_CACHE_SECONDS."""
    apps = []

    def make(**overrides) -> Flask:
        app = create_api(
            settings.model_copy(
                update={
                    "auth_jwks_url": auth_server.jwks_url,
                    "outbox_relay_enabled": False,
                    "jwks_cache_seconds": JWKS_CACHE_SECONDS,
                    **overrides,
                }
            )
        )
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_api(app)


@pytest.fixture
def fresh_minute():
    """Login limits count in whole minutes: a test that needs its attempts in one minute
    starts at least 15 s before the next (a loaded machine checks about 10 passwords a second)."""
    start_early_in_a_minute()
