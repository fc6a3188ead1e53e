"""The web app driven in Chromium against the whole local stack: sign-up, uploads,
live status, playing and downloading clips, deleting, errors, injection, isolation.
Each page is photographed at desktop and phone width into docs/screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import expect

from tests.support.client import PASSWORD, PlatformClient
from tests.support.media import make_source, make_video
from tests.support.web import PROCESSING_TIMEOUT_MS, WebPage

pytestmark = pytest.mark.e2e

XSS_NAME = "<img src=x onerror=alert(1)>.mp4"
# A URL may hold no space: the classic payload without one.
XSS_FRAGMENT = "#<svg/onload=window.__xss=1>"

# Records every value the upload's progress bar and the task's status take, so a test
# can tell what the page showed between two of its own looks.
RECORDER = """() => {
  window.__seen = {upload: [], status: []};
  new MutationObserver(() => {
    const bar = document.querySelector('progress[aria-label="Upload progress"]');
    if (bar && !bar.hidden) window.__seen.upload.push(Number(bar.value));
    const status = document.querySelector('.task-status .status');
    if (status && window.__seen.status.at(-1) !== status.textContent) window.__seen.status.push(status.textContent);
  }).observe(document.body, {subtree: true, childList: true, attributes: true, characterData: true});
}"""


@pytest.fixture(scope="module")
def journey_source(media_dir: Path) -> Path:
    """45 s, small: parts of 20, 20 and 5 s, three clips."""
    return make_source(media_dir / "web-journey.mp4", seconds=45, width=160, height=120)


def _task_id(web: WebPage) -> str:
    web.page.wait_for_url(re.compile(r"#/tasks/[0-9a-f-]{36}$"))
    return web.page.url.rsplit("/", 1)[1]


def _wait_processed(web: WebPage) -> None:
    expect(web.page.locator(".task-status .status")).to_have_text("processed", timeout=PROCESSING_TIMEOUT_MS)


def test_an_athlete_signs_up_uploads_watches_plays_downloads_and_deletes(
    web, local_stack, journey_source, tmp_path
):
    page = web.page
    web.go("/login")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    web.screenshot("login")
    web.assert_accessible()

    web.sign_up()
    expect(page.get_by_text("No tasks yet")).to_be_visible()
    web.screenshot("tasks-empty")

    page.get_by_role("link", name="New task").first.click()
    expect(page.get_by_role("heading", name="New task")).to_be_visible()
    web.screenshot("new-task")
    web.assert_accessible()

    page.evaluate(RECORDER)
    page.get_by_label("Video file").set_input_files(journey_source)
    task_id = _task_id(web)
    seen_upload = page.evaluate("window.__seen.upload")
    assert seen_upload and max(seen_upload) == 100, seen_upload

    _wait_processed(web)
    statuses = page.evaluate("window.__seen.status")
    assert statuses[-1] == "processed" and set(statuses) <= {"queued", "processing", "processed"}, statuses
    expect(page.get_by_role("progressbar", name="Task progress")).to_have_attribute("value", "100")
    clips = page.locator(".clip")
    expect(clips).to_have_count(3)
    expect(page.locator(".source-name")).to_have_text(journey_source.name)
    web.screenshot("task-processed")
    web.assert_accessible()

    # Play the first clip: it buffers, plays, and seeks.
    page.get_by_role("button", name="Play clip 1").click()
    video = clips.first.locator("video")
    expect(video).to_have_attribute("src", re.compile(r"^blob:"))
    video.evaluate("v => { v.muted = true; return v.play(); }")
    page.wait_for_function(
        "() => { const v = document.querySelector('.clip video');"
        " return v.readyState >= 3 && v.currentTime > 0.5; }"
    )
    video.evaluate("v => { v.currentTime = 15; }")
    page.wait_for_function("() => document.querySelector('.clip video').currentTime >= 15")

    # Download the second clip: the very bytes the api serves.
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download clip 2").click()
    saved = tmp_path / "clip-2.mp4"
    download_info.value.save_as(saved)
    token = web.token()
    task = requests.get(
        f"{local_stack.base_url}/tasks/{task_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()
    assert download_info.value.suggested_filename == f"{task_id}-clip-{task['clips'][1]['index']}.mp4"
    served = requests.get(
        f"{local_stack.base_url}{task['clips'][1]['links']['download']}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    assert served.status_code == 200 and len(served.content) > 1000
    assert saved.read_bytes() == served.content

    page.get_by_role("link", name="My tasks").first.click()
    row = page.locator(f'li[data-task-id="{task_id}"]')
    expect(row).to_have_attribute("data-status", "processed")
    web.screenshot("tasks")
    web.assert_accessible()

    row.get_by_role("link").click()
    page.get_by_role("button", name="Delete task").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    web.screenshot("delete-confirm", full_page=False)
    page.get_by_role("button", name="Yes, delete it").click()
    expect(page.get_by_role("heading", name="My tasks")).to_be_visible()
    expect(page.locator(f'li[data-task-id="{task_id}"]')).to_have_count(0)
    gone = requests.get(
        f"{local_stack.base_url}/tasks/{task_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    assert gone.status_code == 404

    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    assert page.evaluate("sessionStorage.length + localStorage.length") == 0
    web.assert_nothing_ran()


def test_a_url_submission_is_processed(web, source_server, short_source):
    page = web.page
    web.sign_up()
    web.go("/new")
    page.get_by_label("Video URL").fill(source_server.url(short_source))
    page.get_by_role("button", name="Submit URL").click()
    _task_id(web)
    _wait_processed(web)
    expect(page.locator(".clip")).to_have_count(1)
    expect(page.locator(".source-name")).to_have_text(source_server.url(short_source))
    web.assert_nothing_ran()


def test_the_apis_messages_show_next_to_their_fields(web, local_stack):
    page = web.page
    web.go("/signup")
    expect(page.get_by_role("heading", name="Sign up")).to_be_visible()
    web.screenshot("signup")
    web.assert_accessible()

    password = page.get_by_label("Password", exact=True)
    web.fill_signup("weak-user", "weak@league.example", "short", "short")
    expect(page.locator(f"#{password.get_attribute('id')}-error")).to_contain_text("at least 8 characters")
    expect(password).to_have_attribute("aria-invalid", "true")

    web.fill_signup("weak-user", "weak@league.example", "lowercase1", "lowercase1")
    expect(page.locator(f"#{password.get_attribute('id')}-error")).to_contain_text("upper-case letter")

    taken = PlatformClient.sign_up(local_stack.base_url, "taken")
    email = page.get_by_label("Email", exact=True)
    web.fill_signup("another-name", taken.email, PASSWORD, PASSWORD)
    expect(page.locator(f"#{email.get_attribute('id')}-error")).to_have_text(
        "that email is already registered"
    )
    expect(page.locator(f"#{password.get_attribute('id')}-error")).to_have_text("")
    web.screenshot("signup-errors")
    web.assert_accessible()

    web.go("/login")
    page.get_by_label("Email or username").fill(taken.email)
    page.get_by_label("Password").fill("Wrong-password1")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator(".form-error")).to_have_text("wrong credentials")
    web.assert_nothing_ran()


def test_a_rate_limited_submission_says_how_long_to_wait(web, local_stack, source_server, short_source):
    page = web.page
    web.sign_up()
    token = web.token()
    # Every submission counts, refused ones too: use up the minute with empty bodies.
    limit = local_stack.settings.tasks_per_minute_per_user
    with requests.Session() as session:
        session.headers["Authorization"] = f"Bearer {token}"
        for _ in range(limit):
            assert session.post(f"{web.base_url}/tasks", json={}, timeout=10).status_code == 400
    web.go("/new")
    url = page.get_by_label("Video URL")
    url.fill(source_server.url(short_source))
    page.get_by_role("button", name="Submit URL").click()
    message = page.locator(f"#{url.get_attribute('id')}-error")
    expect(message).to_contain_text(re.compile(r"Try again in \d+ s\."))
    wait = int(re.search(r"Try again in (\d+) s", message.text_content()).group(1))
    assert 1 <= wait <= 60
    expect(page.get_by_role("heading", name="New task")).to_be_visible()
    web.assert_nothing_ran()


def test_injected_markup_in_a_file_name_and_a_url_shows_as_text_and_never_runs(
    web, source_server, short_source
):
    page = web.page
    web.sign_up()
    web.go("/new")
    page.get_by_label("Video file").set_input_files(
        {"name": XSS_NAME, "mimeType": "video/mp4", "buffer": short_source.read_bytes()}
    )
    upload_id = _task_id(web)
    expect(page.locator(".source-name")).to_have_text(XSS_NAME)

    web.go("/new")
    url = source_server.url(short_source) + XSS_FRAGMENT
    page.get_by_label("Video URL").fill(url)
    page.get_by_role("button", name="Submit URL").click()
    url_id = _task_id(web)
    token = web.token()
    stored = requests.get(
        f"{web.base_url}/tasks/{url_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
    ).json()["source"]["url"]
    expect(page.locator(".source-name")).to_have_text(stored)
    assert XSS_FRAGMENT[1:] in page.locator(".source-name").text_content()
    assert page.locator("main img, main svg").count() == 0

    web.go("/tasks")
    expect(page.locator(f'li[data-task-id="{upload_id}"]')).to_be_visible()
    web.assert_nothing_ran()
    for task_id in (upload_id, url_id):
        requests.delete(
            f"{web.base_url}/tasks/{task_id}", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )


def test_a_second_user_sees_nothing_of_the_first_users_tasks(web, local_stack, source_server, short_source):
    first = PlatformClient.sign_up(local_stack.base_url, "first")
    task = first.submit_url(source_server.url(short_source))

    page = web.page
    web.sign_up("second")
    expect(page.get_by_text("No tasks yet")).to_be_visible()
    expect(page.locator("li.task")).to_have_count(0)
    web.go(f"/tasks/{task['id']}")
    expect(page.locator(".form-error")).to_contain_text("not found")
    expect(page.locator(".clip")).to_have_count(0)
    expect(page.locator(".source-name")).to_have_count(0)
    web.assert_nothing_ran()
    first.delete(f"/tasks/{task['id']}")


def test_a_paused_upload_continues_after_a_reload(web, local_stack, media_dir, context):
    probe = requests.options(f"{local_stack.base_url}/uploads", timeout=10)
    if "Tus-Version" not in probe.headers:
        pytest.skip(
            "no tus server answers at /uploads on this stack (OPTIONS /uploads sent no Tus-Version): "
            "the app uploads with a multipart POST /tasks until it does"
        )
    # Some megabytes sent at 2 MB/s (the browser's upload throttled): time to pause midway.
    source = make_video(
        media_dir / "web-resumable.mp4", width=640, height=360, seconds=12, extra=("-b:v", "8M", "-shortest")
    )
    page = web.page
    creations = []
    page.on(
        "request", lambda r: creations.append(r.url) if r.method == "POST" and "/uploads" in r.url else None
    )
    devtools = context.new_cdp_session(page)
    devtools.send("Network.enable")
    devtools.send(
        "Network.emulateNetworkConditions",
        {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": 2_000_000},
    )
    web.sign_up()
    web.go("/new")
    page.get_by_label("Video file").set_input_files(source)
    bar = page.get_by_role("progressbar", name="Upload progress")
    page.wait_for_function(
        "() => Number(document.querySelector('progress[aria-label=\"Upload progress\"]').value) >= 10"
    )
    page.get_by_role("button", name="Pause").click()
    expect(page.get_by_role("button", name="Resume")).to_be_visible()
    paused_at = int(bar.get_attribute("value") or 0)
    assert 0 < paused_at < 100
    web.screenshot("upload-paused")

    page.reload()
    expect(page.get_by_text("An upload was interrupted")).to_be_visible()
    page.get_by_label("Video file").set_input_files(source)
    expect(page.locator(".upload-state")).to_contain_text("Resuming the earlier upload")
    task_id = _task_id(web)
    # One upload resource, created once: the second run continued it.
    assert len(creations) == 1, creations
    expect(page.locator(".task-status .status")).to_have_text(re.compile("queued|processing|processed"))
    web.assert_nothing_ran()
    requests.delete(
        f"{local_stack.base_url}/tasks/{task_id}",
        headers={"Authorization": f"Bearer {web.token()}"},
        timeout=10,
    )


def _set_hidden(web: WebPage, hidden: bool) -> None:
    web.page.evaluate(
        "hidden => { Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});"
        " document.dispatchEvent(new Event('visibilitychange')); }",
        hidden,
    )


def test_polling_is_never_faster_than_2_s_and_stops_while_the_tab_is_hidden(web):
    page = web.page
    web.sign_up()
    # When the page asks for the list, by the page's own clock.
    page.evaluate(
        """() => {
          window.__polls = [];
          const fetch = window.fetch;
          window.fetch = (resource, init) => {
            if (String(resource).includes("/tasks?max=")) window.__polls.push(performance.now());
            return fetch(resource, init);
          };
        }"""
    )
    page.wait_for_timeout(9000)
    polls = page.evaluate("window.__polls")
    gaps = [later - earlier for earlier, later in zip(polls, polls[1:])]
    assert len(polls) >= 2, polls
    # Nothing changes in an empty list: every gap is at least the 2 s floor (timers
    # never fire early), and the page slows down.
    assert all(gap >= 2000 for gap in gaps), gaps
    assert len(polls) <= 4, polls

    _set_hidden(web, True)
    hidden_from = page.evaluate("window.__polls.length")
    page.wait_for_timeout(7000)
    assert page.evaluate("window.__polls.length") == hidden_from, "polled while the tab was hidden"

    _set_hidden(web, False)
    page.wait_for_timeout(1000)
    assert page.evaluate("window.__polls.length") == hidden_from + 1, (
        "showing the tab did not refresh at once"
    )
    web.assert_nothing_ran()


def _tab_to(web: WebPage, accessible_name: str, presses: int = 15) -> None:
    for _ in range(presses):
        web.page.keyboard.press("Tab")
        focused = web.page.evaluate(
            "() => { const e = document.activeElement;"
            " return (e.labels && e.labels[0] ? e.labels[0].textContent : e.textContent || '').trim(); }"
        )
        if focused == accessible_name:
            return
    pytest.fail(f"Tab never reached {accessible_name!r}")


def test_logging_in_and_reaching_a_new_task_work_by_keyboard(web, local_stack):
    user = PlatformClient.sign_up(local_stack.base_url, "keys")
    page = web.page
    web.go("/login")
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    _tab_to(web, "Email or username")
    page.keyboard.type(user.email)
    _tab_to(web, "Password", presses=1)
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="My tasks")).to_be_visible()
    _tab_to(web, "New task")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name="New task")).to_be_visible()
    _tab_to(web, "Video file")
    _tab_to(web, "Video URL")
    web.assert_nothing_ran()
