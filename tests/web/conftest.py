"""The web app in a real browser against the real stack: one Chromium (Debian's) for
the whole run, a fresh browser context (no cookies, no storage) for each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, sync_playwright

from tests.support.web import CHROMIUM, CHROMIUM_ARGS, DESKTOP, WEB_DIST, WebPage


@pytest.fixture(scope="session")
def web_build() -> None:
    """The build `make web` makes (`make test` runs it first)."""
    if not (WEB_DIST / "index.html").exists():
        pytest.fail("web/dist is not built: run `make web` (make test does it first)")


@pytest.fixture(scope="session")
def browser(web_build: None) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    # What an injected payload would set; the tests assert it stays unset.
    context.add_init_script("window.__xss = undefined;")
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def web(context: BrowserContext, local_stack) -> WebPage:
    """A tab of the app served by the stack's gateway."""
    return WebPage.open(context, local_stack.base_url)
