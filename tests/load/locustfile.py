"""Load scenario: athletes reading their tasks, logging in and submitting videos.

The mix is 70 % reads (the task list and one task), 20 % logins, 10 % submissions by URL
of a small video served on this machine (``LOAD_SOURCE_URL``). Run through the gateway:

    locust -f tests/load/locustfile.py --headless -u 50 -r 2.5 -t 140s --host http://127.0.0.1:5050

``make load`` runs it twice against a fresh local stack and writes docs/load.md.
"""

from __future__ import annotations

import os
import random
import uuid

from locust import HttpUser, between, task

SOURCE_URL = os.environ.get("LOAD_SOURCE_URL", "http://127.0.0.1:8000/source.mp4")
PASSWORD = "Athlete123"


class Athlete(HttpUser):
    wait_time = between(0.5, 1.5)

    def on_start(self) -> None:
        name = f"load{uuid.uuid4().hex[:12]}"
        self.email = f"{name}@league.test"
        self.client.post(
            "/auth/signup",
            json={"username": name, "email": self.email, "password": PASSWORD, "password_2": PASSWORD},
            name="POST /auth/signup",
        )
        self.login()
        self.task_ids: list[str] = []
        self.submit()

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @task(20)
    def login(self) -> None:
        response = self.client.post(
            "/auth/login", json={"email": self.email, "password": PASSWORD}, name="POST /auth/login"
        )
        if response.ok:
            self.token = response.json()["token"]

    @task(35)
    def list_tasks(self) -> None:
        self.client.get("/tasks?max=20&order=1", headers=self.auth, name="GET /tasks")

    @task(35)
    def get_task(self) -> None:
        if self.task_ids:
            task_id = random.choice(self.task_ids)
            self.client.get(f"/tasks/{task_id}", headers=self.auth, name="GET /tasks/<id>")

    @task(10)
    def submit(self) -> None:
        response = self.client.post("/tasks", json={"url": SOURCE_URL}, headers=self.auth, name="POST /tasks")
        if response.status_code == 202:
            self.task_ids.append(response.json()["id"])
