"""Fixtures of the hostile-input tests: the session's local stack seen through its
gateway, its database and signing key (to forge tokens and mint users cheaply), an
in-process api with the production URL rules, and a source server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy
from sqlalchemy.engine import Engine

from services.api import close_app, create_app
from shared.config import Settings
from shared.tokens import SigningKey, TokenVerifier, generate_signing_key_pem, signing_key_from_pem
from tests.support.client import PlatformClient
from tests.support.security import SCANNED, Gateway, SourceServer, check_answer, mint_user, serve


@pytest.fixture(scope="session", autouse=True)
def scanned_answers() -> Iterator[None]:
    """Reports, at the end of the run (``-s``), how many answers the leak scan read."""
    yield
    print(f"\nleak scan: read {SCANNED.responses} answers ({SCANNED.bytes / 1e6:.1f} MB)")


@pytest.fixture
def gateway(local_stack) -> Iterator[Gateway]:
    client = Gateway(local_stack.base_url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def stack_engine(local_stack) -> Iterator[Engine]:
    engine = sqlalchemy.create_engine(local_stack.settings.database_url, pool_size=2)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def stack_key(local_stack) -> SigningKey:
    """The private key the stack's auth service signs with (it lives in the stack's
    state folder): lets a test forge tokens that only differ from real ones where the
    test says."""
    return signing_key_from_pem(local_stack.stack.config.signing_key_path.read_bytes())


@pytest.fixture
def athlete(gateway: Gateway) -> PlatformClient:
    return PlatformClient.sign_up(gateway.base_url, check=check_answer)


@pytest.fixture
def rival(gateway: Gateway) -> PlatformClient:
    return PlatformClient.sign_up(gateway.base_url, check=check_answer)


@pytest.fixture
def minted_user(stack_engine: Engine, stack_key: SigningKey, local_stack) -> Callable[[], PlatformClient]:
    return lambda: mint_user(stack_engine, stack_key, local_stack.settings, local_stack.base_url)


@pytest.fixture
def source_server() -> Iterator[SourceServer]:
    state = SourceServer()
    httpd = serve(state)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


# --- the api in-process, with production's URL rules ------------------------------------


@pytest.fixture(scope="session")
def test_key() -> SigningKey:
    return signing_key_from_pem(generate_signing_key_pem())


@pytest.fixture
def production_rules_app(settings: Settings, test_key: SigningKey):
    """The api on the test's database, loopback sources refused as in production."""
    configured = settings.model_copy(
        update={
            "outbox_relay_enabled": False,
            "allow_loopback_sources": False,
            "tasks_per_minute_per_user": 10_000,
        }
    )
    app = create_app(configured, token_verifier=TokenVerifier(configured, public_keys=[test_key.public_key]))
    yield app
    close_app(app)
