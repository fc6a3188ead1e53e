"""Broken object-level authorization, through the gateway: a second user reaches none
of the first user's task by any endpoint, and every guessed, enumerated or malformed
id gets the very answer a missing task gets."""

from __future__ import annotations

import uuid

import pytest

from tests.support.client import PlatformClient
from tests.support.security import tiny_video, upload, wait_for_outcome

pytestmark = pytest.mark.security

NOT_FOUND = {"error": {"code": "task_not_found", "message": "task not found"}}


@pytest.fixture(scope="module")
def run_video(tmp_path_factory) -> bytes:
    return tiny_video(tmp_path_factory.mktemp("access") / "run.mp4").read_bytes()


def _neighbours(task_id: str) -> list[str]:
    """Ids an attacker would try next to one they saw: one off at each end, and the
    same id spelt every way the UUID parser accepts."""
    raw = uuid.UUID(task_id)
    return [
        str(uuid.UUID(int=(raw.int + 1) % 2**128)),
        str(uuid.UUID(int=(raw.int - 1) % 2**128)),
        str(uuid.UUID(int=raw.int ^ (1 << 64))),
        str(uuid.UUID(int=0)),
        str(uuid.UUID(int=2**128 - 1)),
    ]


def _spellings(task_id: str) -> list[str]:
    raw = uuid.UUID(task_id)
    return [task_id.upper(), raw.hex, f"{{{task_id}}}", f"urn:uuid:{task_id}"]


GARBAGE_IDS = [
    "0",
    "1",
    "-1",
    "null",
    "%00",
    "..",
    "..%2F..%2Fetc%2Fpasswd",
    "%2e%2e",
    "' OR '1'='1",
    "1;DROP TABLE tasks",
    "*",
    "x" * 4000,
    "%C0%AE%C0%AE",
    "%F0%9F%92%A9",
]


def test_a_second_user_reaches_nothing_of_the_first_users_task(gateway, athlete, rival, run_video):
    key = f"run-{uuid.uuid4().hex}"
    created = upload(gateway, athlete, "my-run.mp4", run_video, headers={"Idempotency-Key": key})
    assert created.status_code == 202, created.text
    task_id = created.json()["id"]
    task = wait_for_outcome(gateway, athlete, task_id)
    assert task["status"] == "processed" and len(task["clips"]) == 1, task
    # What the rival must never see in any answer.
    secrets = [task_id, athlete.id, athlete.email, "my-run.mp4"]
    rival_get = lambda path: gateway.get(path, user=rival, foreign=secrets)  # noqa: E731
    missing = str(uuid.uuid4())

    # every endpoint, the owner's id: exactly the answer of a task that does not exist
    clip_index = task["clips"][0]["index"]
    for suffix in ("", f"/clips/{clip_index}", "/clips/0", "/clips/1", "/original"):
        theirs = rival_get(f"/tasks/{task_id}{suffix}")
        absent = rival_get(f"/tasks/{missing}{suffix}")
        assert (theirs.status_code, theirs.json()) == (absent.status_code, absent.json()) == (404, NOT_FOUND)
        assert theirs.headers.get("Content-Length") == absent.headers.get("Content-Length")
    deleted = gateway.delete(f"/tasks/{task_id}", user=rival, foreign=secrets)
    assert (deleted.status_code, deleted.json()) == (404, NOT_FOUND)
    listed = gateway.get("/tasks?max=100&order=0", user=rival, foreign=secrets)
    assert listed.json()["tasks"] == []

    # the owner's id spelt otherwise, and its neighbours
    for other in _spellings(task_id) + _neighbours(task_id):
        for suffix in ("", f"/clips/{clip_index}", "/original"):
            answer = rival_get(f"/tasks/{other}{suffix}")
            assert (answer.status_code, answer.json()) == (404, NOT_FOUND), other
        assert gateway.delete(f"/tasks/{other}", user=rival, foreign=secrets).status_code == 404

    # the owner's idempotency key gives the rival a task of his own, never the owner's
    replay = gateway.post(
        "/tasks",
        user=rival,
        json={"url": "https://videos.league.example/other.mp4"},
        headers={"Idempotency-Key": key},
        foreign=secrets,
    )
    assert replay.status_code == 202 and replay.json()["id"] != task_id

    # and nothing the rival did changed the owner's task
    mine = gateway.get(f"/tasks/{task_id}", user=athlete).json()
    assert mine["status"] == "processed" and mine["clips"] == task["clips"]
    clip = gateway.get(task["clips"][0]["links"]["download"], user=athlete)
    assert clip.status_code == 200 and clip.headers["Content-Type"] == "video/mp4"
    original = gateway.get(f"/tasks/{task_id}/original", user=athlete)
    assert original.status_code == 200 and original.content == run_video


def test_the_owner_reaches_the_task_by_its_other_spellings_and_a_deleted_one_is_gone(gateway, athlete):
    created = gateway.post("/tasks", user=athlete, json={"url": "https://videos.league.example/run.mp4"})
    task_id = created.json()["id"]
    for spelling in _spellings(task_id):
        assert gateway.get(f"/tasks/{spelling}", user=athlete).json()["id"] == task_id
    assert gateway.delete(f"/tasks/{task_id}", user=athlete).status_code == 204
    for spelling in [task_id, *_spellings(task_id)]:
        for suffix in ("", "/clips/0", "/original"):
            answer = gateway.get(f"/tasks/{spelling}{suffix}", user=athlete)
            assert (answer.status_code, answer.json()) == (404, NOT_FOUND)


@pytest.mark.parametrize("raw_id", GARBAGE_IDS)
def test_garbage_ids_get_the_missing_task_answer(gateway, minted_user, raw_id):
    user: PlatformClient = minted_user()
    for method, suffix in (("GET", ""), ("GET", "/clips/0"), ("GET", "/original"), ("DELETE", "")):
        answer = gateway.request(method, f"/tasks/{raw_id}{suffix}", user=user)
        if method == "GET" and answer.headers.get("Content-Type", "").startswith("text/html"):
            # `/tasks/..` (spelt `..` or `%2e%2e`) is `/`: the web app's page, which
            # holds no task and no API answer.
            assert raw_id in ("..", "%2e%2e") and suffix == "" and answer.status_code == 200, raw_id
            assert 'id="app"' in answer.text
            continue
        code = answer.json()["error"]["code"]
        # A NUL or a climb above the root is refused by the gateway itself (400); a path
        # the router does not match is a plain 404 (or 405 for its method); every other
        # id is the missing task. Never a 5xx, always the error shape (checked by the client).
        assert (answer.status_code, code) in {
            (400, "bad_request"),
            (404, "task_not_found"),
            (404, "not_found"),
            (405, "method_not_allowed"),
        }, (method, raw_id, answer.status_code, code)
        if "." not in raw_id and "%" not in raw_id:
            assert (answer.status_code, code) == (404, "task_not_found"), (method, raw_id)


def test_random_ids_never_hit_a_task_and_every_miss_looks_the_same(gateway, minted_user, athlete):
    # Other users' tasks exist; an enumeration of random ids finds none of them.
    gateway.post("/tasks", user=athlete, json={"url": "https://videos.league.example/run.mp4"})
    user = minted_user()
    bodies = {gateway.get(f"/tasks/{uuid.uuid4()}", user=user).text for _ in range(200)}
    assert len(bodies) == 1 and gateway.get(f"/tasks/{uuid.uuid4()}", user=user).json() == NOT_FOUND
