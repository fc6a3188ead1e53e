"""Api fixtures: an in-process app on the test's database and emulators, users with
tokens, a tiny real video, and helpers to read what reached Pub/Sub and Cloud Storage."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from services.api import close_app, create_app
from shared.config import Settings
from shared.tokens import (
    SigningKey,
    TokenVerifier,
    generate_signing_key_pem,
    issue_token,
    public_jwk,
    signing_key_from_pem,
)
from tests.support.api import JwksServer
from tests.support.db import insert_user

PROJECT_ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def api_key() -> SigningKey:
    """The key test tokens are signed with; the in-process api trusts its public half."""
    return signing_key_from_pem(generate_signing_key_pem())


@pytest.fixture
def jwks(api_key) -> Iterator[JwksServer]:
    """A JWKS endpoint serving the test key, for an api started as its own process."""
    with JwksServer() as server:
        server.keys = [public_jwk(api_key.public_key)]
        yield server


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    """The test's settings; the relay thread is off so each test drives the outbox itself."""
    return settings.model_copy(update={"outbox_relay_enabled": False})


@pytest.fixture
def make_app(api_key: SigningKey, database_url: str) -> Iterator[Callable[..., object]]:
    """Apps built for the test, closed at its end. It asks for the test database itself
    so that it is set up after it and torn down before it is dropped: an app's upload
    sweep and outbox relay threads stop before their database goes away."""
    apps = []

    def make(settings: Settings, **overrides):
        settings = settings.model_copy(update=overrides) if overrides else settings
        app = create_app(settings, token_verifier=TokenVerifier(settings, public_keys=[api_key.public_key]))
        apps.append(app)
        return app

    yield make
    for app in apps:
        close_app(app)


@pytest.fixture
def app(make_app, api_settings: Settings):
    return make_app(api_settings)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def engine(app) -> Engine:
    return app.extensions["engine"]


@dataclass(frozen=True)
class User:
    id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def make_user(engine: Engine, api_settings: Settings, api_key: SigningKey) -> Callable[[], User]:
    def make() -> User:
        user_id = insert_user(engine)
        return User(user_id, issue_token(api_key, api_settings, str(user_id)))

    return make


@pytest.fixture
def alice(make_user) -> User:
    return make_user()


@pytest.fixture
def bob(make_user) -> User:
    return make_user()


@pytest.fixture(scope="session")
def video_bytes() -> bytes:
    """A real one-second MP4 (160x90, with audio): a few kilobytes."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "run.mp4"
        subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-loglevel",
                "error",
                "-f",
                "lavfi",
                "-i",
                "testsrc=size=160x90:rate=10",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440",
                "-t",
                "1",
                "-c:v",
                "libx264",
                "-preset",
                "ultrafast",
                "-c:a",
                "aac",
                "-shortest",
                "-movflags",
                "+faststart",
                str(path),
            ],
            check=True,
            timeout=60,
        )
        return path.read_bytes()
