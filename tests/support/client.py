"""A client of the platform as a user sees it: HTTP through the gateway, nothing else."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

FINAL_STATUSES = frozenset({"processed", "failed", "canceled"})
STATUS_RANK = {"queued": 0, "processing": 1, "processed": 2, "failed": 2, "canceled": 2}
PASSWORD = "Athlete123"
HTTP_TIMEOUT = 30


def assert_error(response: requests.Response, status: int, code: str | None = None) -> dict:
    """The platform's error shape with ``status`` (and ``code``): JSON, never a traceback."""
    assert response.status_code == status, f"{response.status_code} {response.text[:500]}"
    assert response.headers.get("Content-Type", "").startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    if code is not None:
        assert body["error"]["code"] == code, body
    return body


@dataclass
class Observed:
    """What a client polling a task saw, in order: (status, progress) pairs, deduplicated."""

    snapshots: list[tuple[str, int]] = field(default_factory=list)

    def add(self, task: dict) -> None:
        snapshot = (task["status"], task["progress"])
        if not self.snapshots or self.snapshots[-1] != snapshot:
            self.snapshots.append(snapshot)

    def only_moved_forward(self) -> bool:
        ranks = [(STATUS_RANK[status], progress) for status, progress in self.snapshots]
        return ranks == sorted(ranks)


class PlatformClient:
    """One user of the platform with a token: signed up and logged in through the
    gateway (:meth:`sign_up`), or given a token the test signed itself."""

    def __init__(self, base_url: str, token: str, email: str, user_id: str = "") -> None:
        self.base_url = base_url
        self.id = user_id
        self.email = email
        self.token = token
        self.session = requests.Session()
        self.session.headers.update(self.headers)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @classmethod
    def sign_up(
        cls,
        base_url: str,
        name: str = "athlete",
        *,
        check: Callable[..., None] | None = None,
        timeout: float = HTTP_TIMEOUT,
    ) -> PlatformClient:
        """Sign a new user up and log in, as the README's curl calls do. ``check``, when
        given, sees both answers first (the signup's with ``echoed``: the name and email
        the client sent)."""
        username = f"{name}-{uuid.uuid4().hex[:8]}"
        email = f"{username}@league.example"
        account = {"username": username, "email": email, "password": PASSWORD, "password_2": PASSWORD}
        signup = requests.post(f"{base_url}/auth/signup", timeout=timeout, json=account)
        if check is not None:
            check(signup, echoed=[username, email])
        assert signup.status_code == 201, signup.text
        assert "password" not in signup.text and "hash" not in signup.text
        login = requests.post(
            f"{base_url}/auth/login", timeout=timeout, json={"email": email, "password": PASSWORD}
        )
        if check is not None:
            check(login)
        assert login.status_code == 200, login.text
        body = login.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] > 0
        return cls(base_url, body["token"], email, signup.json()["id"])

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.session.get(self.url(path), timeout=HTTP_TIMEOUT, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url(path), timeout=HTTP_TIMEOUT)

    def _accepted(self, response: requests.Response) -> dict:
        assert response.status_code == 202, response.text
        task = response.json()
        assert task["status"] == "queued"
        assert response.headers["Location"].endswith(f"/tasks/{task['id']}")
        return task

    def submit_url(self, source_url: str, **options: object) -> dict:
        """POST the URL, with the clip options given (``formats=[...]``, ``card={...}``)."""
        return self._accepted(
            self.session.post(self.url("/tasks"), json={"url": source_url, **options}, timeout=HTTP_TIMEOUT)
        )

    def submit_file(self, path: Path) -> dict:
        with path.open("rb") as source:
            response = self.session.post(
                self.url("/tasks"), timeout=HTTP_TIMEOUT, files={"file": (path.name, source, "video/mp4")}
            )
        return self._accepted(response)

    def task(self, task_id: str) -> dict:
        response = self.get(f"/tasks/{task_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_for(
        self,
        task_id: str,
        statuses=FINAL_STATUSES,
        *,
        timeout: float = 240,
        interval: float = 0.2,
        observed: Observed | None = None,
        while_waiting: Callable[[], None] | None = None,
    ) -> dict:
        """Poll ``GET /tasks/<id>`` until its status is one of ``statuses``.

        ``while_waiting`` runs between polls (e.g. a check that the stack's processes
        are alive, so a dead worker fails the test at once rather than at the timeout).
        """
        deadline = time.monotonic() + timeout
        last: dict | None = None
        while time.monotonic() < deadline:
            response = self.get(f"/tasks/{task_id}")
            assert response.status_code == 200, response.text
            last = response.json()
            if observed is not None:
                observed.add(last)
            if last["status"] in statuses:
                return last
            if while_waiting is not None:
                while_waiting()
            time.sleep(interval)
        pytest.fail(f"task {task_id} not {sorted(statuses)} after {timeout:.0f} s; last answer: {last}")

    def download(self, link: str, target: Path) -> Path:
        with self.session.get(self.url(link), stream=True, timeout=HTTP_TIMEOUT) as response:
            assert response.status_code == 200, response.text
            with target.open("wb") as out:
                for chunk in response.iter_content(1024 * 1024):
                    out.write(chunk)
        return target
