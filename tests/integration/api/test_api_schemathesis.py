"""Schemathesis against the running services through the gateway: whatever it generates
from /openapi.json, no answer is a 500 and every answer matches the document."""

from __future__ import annotations

import json

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings

from services.api.openapi import DOCUMENT_PATH
from tests.support.client import PlatformClient
from tests.support.tus import sweep_every_upload

# A schema cannot say everything a server checks: a well-formed source URL may point at a
# private address (422), random bytes in the "file" part are not a video (415), two
# well-formed passwords may differ (422). Valid-looking data refused for those reasons is
# expected; anything else still fails the positive-data check.
# Undeclared methods: nginx answers TRACE itself (405 in HTML, no Allow header) before any
# service sees it; the services' own 405s (JSON, with Allow) are checked in-process.
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            "positive_data_acceptance": {
                "expected-statuses": ["2xx", "3xx", "401", "403", "404", "409", "415", "422", "429", "503"],
            },
            "unsupported_method": {"enabled": False},
            # The defaults plus 412: tus answers a Tus-Resumable version it does not speak
            # with 412 Precondition Failed, as its protocol requires.
            "negative_data_rejection": {
                "expected-statuses": [
                    "400",
                    "401",
                    "403",
                    "404",
                    "405",
                    "406",
                    "409",
                    "412",
                    "415",
                    "422",
                    "428",
                    "429",
                    "5xx",
                ],
            },
        },
        "generation": {"max-examples": 100, "mode": "all"},
    }
)


# Logging out or changing the password ends every session of the user that does it: those
# operations run as a user of their own, so the others keep a live token.
SESSION_ENDING_PATHS = {"/auth/logout", "/auth/password"}


@pytest.fixture(scope="module")
def gateway_tokens(local_stack) -> dict[str, str]:
    """Tokens of two users, both taken before any fuzzing (whose failed logins count
    against the gateway address's login limit): one for the session-ending operations,
    one for the rest."""
    return {
        "sessions": PlatformClient.sign_up(local_stack.base_url, "fuzz").token,
        "rest": PlatformClient.sign_up(local_stack.base_url, "fuzz").token,
    }


# A tus PATCH body is raw bytes, like application/octet-stream.
schemathesis.serializer.alias("application/offset+octet-stream", "application/octet-stream")


@pytest.fixture(scope="module", autouse=True)
def _no_upload_left(local_stack):
    """The resumable uploads the generated requests created are swept afterwards."""
    yield
    sweep_every_upload(local_stack.settings.database_url)


# The file the api serves; the test below checks the gateway serves exactly this.
schema = schemathesis.openapi.from_path(DOCUMENT_PATH, config=CONFIG)


def test_the_gateway_serves_the_document(local_stack):
    response = requests.get(f"{local_stack.base_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    assert response.json() == json.loads(DOCUMENT_PATH.read_text())


@schema.parametrize()
# Derandomized: the same examples on every run, so a CI run fails only for a change.
@settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_every_answer_matches_the_document(case, local_stack, gateway_tokens):
    # A case that carries its own Authorization (a negative case mutates it) keeps it:
    # replacing it with a valid token would turn a schema-violating request into a valid one.
    own = {name.lower() for name in (case.headers or {})}
    token = gateway_tokens["sessions" if case.path in SESSION_ENDING_PATHS else "rest"]
    headers = {} if "authorization" in own else {"Authorization": f"Bearer {token}"}
    case.call_and_validate(base_url=local_stack.base_url, headers=headers, timeout=60)
