"""One user never sees, downloads or deletes another user's task, at any point of its
life: every attempt is answered exactly like a task that does not exist."""

from __future__ import annotations

import functools
import uuid

import pytest

from tests.support.client import PlatformClient, assert_error
from tests.support.stack import assert_alive

pytestmark = pytest.mark.e2e


def _missing_answer(client: PlatformClient) -> tuple[int, dict]:
    response = client.get(f"/tasks/{uuid.uuid4()}")
    return response.status_code, response.json()


def _assert_invisible(
    intruder: PlatformClient, task: dict, clip_links: list[str], missing: tuple[int, dict]
) -> None:
    task_id = task["id"]
    listed = intruder.get("/tasks", params={"max": 100, "order": 0})
    assert listed.status_code == 200, listed.text
    assert task_id not in {item["id"] for item in listed.json()["tasks"]}

    attempts = {
        "get": intruder.get(f"/tasks/{task_id}"),
        "original": intruder.get(f"/tasks/{task_id}/original"),
        "clip 1 by its route": intruder.get(f"/tasks/{task_id}/clips/1"),
        "delete": intruder.delete(f"/tasks/{task_id}"),
    }
    attempts |= {f"the owner's link {link}": intruder.get(link) for link in clip_links}
    for what, response in attempts.items():
        assert_error(response, 404)
        assert (response.status_code, response.json()) == missing, what


def test_another_user_can_neither_see_download_nor_delete_a_task(
    local_stack, source_server, short_source, tmp_path
):
    owner = PlatformClient.sign_up(local_stack.base_url, "owner")
    intruder = PlatformClient.sign_up(local_stack.base_url, "intruder")
    intruder_task = intruder.submit_url(source_server.url(short_source))
    missing = _missing_answer(intruder)
    assert missing[0] == 404

    by_url = owner.submit_url(source_server.url(short_source))
    by_upload = owner.submit_file(short_source)
    # While queued: the intruder's DELETE must not cancel it either.
    for task in (by_url, by_upload):
        _assert_invisible(intruder, task, [], missing)

    alive = functools.partial(assert_alive, local_stack.stack)
    finished = [owner.wait_for(task["id"], while_waiting=alive) for task in (by_url, by_upload)]
    assert [task["status"] for task in finished] == ["processed", "processed"]
    for task in finished:
        links = [clip["links"]["download"] for clip in task["clips"]]
        assert links
        _assert_invisible(intruder, task, links, missing)
        # Still whole for its owner after every attempt.
        assert owner.task(task["id"])["status"] == "processed"
        for index, link in enumerate(links):
            owner.download(link, tmp_path / f"{task['id']}-{index}.mp4")

    # The owner is refused the intruder's task in the same way.
    _assert_invisible(owner, intruder_task, [], _missing_answer(owner))
    assert [item["id"] for item in intruder.get("/tasks").json()["tasks"]] == [intruder_task["id"]]

    # Without a token nothing is answered at all.
    for path in (f"/tasks/{by_url['id']}", "/tasks", f"/tasks/{by_upload['id']}/original"):
        assert_error(owner.session.get(owner.url(path), headers={"Authorization": None}, timeout=30), 401)
