"""What the auth tests that run auth over HTTP beside a real api share: the athlete, the
auth service on one loopback address across its restarts, and the calls they make."""

from __future__ import annotations

import json
import urllib.request

from flask import Flask

from infra.local.fileserver import serve_wsgi

# The api's JWKS cache in these tests; a test that changes auth's keys waits past it.
JWKS_CACHE_SECONDS = 1

ATHLETE = {
    "username": "runner1",
    "email": "runner1@league.org",
    "password": "Admin123",
    "password_2": "Admin123",
}


class AuthServer:
    """Whichever auth app is running, served on one loopback address."""

    def __init__(self) -> None:
        self.app: Flask | None = None
        self.jwks_url = ""
        self._serving = serve_wsgi(self._wsgi, name="auth")

    def _wsgi(self, environ, start_response):
        return self.app(environ, start_response)

    def published_kids(self) -> list[str]:
        with urllib.request.urlopen(self.jwks_url, timeout=5) as response:
            return [key["kid"] for key in json.load(response)["keys"]]

    def __enter__(self) -> AuthServer:
        self.jwks_url = self._serving.__enter__() + "/auth/.well-known/jwks.json"
        return self

    def __exit__(self, *exc_info) -> None:
        self._serving.__exit__(*exc_info)


def login(auth_app: Flask, password: str = ATHLETE["password"]) -> str:
    """A token for the athlete, logged in through auth."""
    response = auth_app.test_client().post(
        "/auth/login", json={"email": ATHLETE["email"], "password": password}
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["token"]


def list_tasks(api_app: Flask, token: str):
    return api_app.test_client().get("/tasks", headers={"Authorization": f"Bearer {token}"})
