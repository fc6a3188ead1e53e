"""Driving the web app (web/) in Debian's Chromium with Playwright: the browser's
launch, a page that records what must never happen (a dialog, a page error, the XSS
flag), screenshots at desktop and phone width, and the axe-core check."""

from __future__ import annotations

import gzip
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import BrowserContext, Page, expect

from tests.support.client import PASSWORD

PROJECT_ROOT = Path(__file__).resolve().parents[2]
WEB_DIST = PROJECT_ROOT / "web" / "dist"
AXE_SOURCE = PROJECT_ROOT / "web" / "node_modules" / "axe-core" / "axe.min.js"
# Where the pages are photographed: docs/screenshots with `make screenshots`; otherwise
# under .local, so a test run leaves the tree as it found it.
SCREENSHOTS = Path(os.environ.get("WEB_SCREENSHOTS_DIR") or PROJECT_ROOT / ".local" / "screenshots")
CHROMIUM = "/usr/bin/chromium"
# Playwright's launch() gives the browser a new, empty profile folder of its own.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 740}
# Generous bounds for a loaded 2-core machine: they prove "it ends", nothing more.
UI_TIMEOUT_MS = 30_000
PROCESSING_TIMEOUT_MS = 420_000


@dataclass
class WebPage:
    """One tab of the app, with the events no test may see."""

    page: Page
    base_url: str
    dialogs: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, context: BrowserContext, base_url: str) -> WebPage:
        page = context.new_page()
        page.set_default_timeout(UI_TIMEOUT_MS)
        web = cls(page, base_url)

        def dialog(d) -> None:
            web.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)
        page.on("pageerror", lambda error: web.page_errors.append(str(error)))
        page.goto(f"{base_url}/")
        return web

    def go(self, route: str) -> None:
        self.page.goto(f"{self.base_url}/#{route}")

    def sign_up(self, name: str = "athlete") -> tuple[str, str]:
        """Sign a new user up through the form; the app logs in and shows My tasks."""
        username = f"{name}-{uuid.uuid4().hex[:8]}"
        email = f"{username}@league.example"
        self.go("/signup")
        self.fill_signup(username, email, PASSWORD, PASSWORD)
        expect(self.page.get_by_role("heading", name="My tasks")).to_be_visible()
        return username, email

    def fill_signup(self, username: str, email: str, password: str, password_2: str) -> None:
        page = self.page
        page.get_by_label("Username").fill(username)
        page.get_by_label("Email", exact=True).fill(email)
        page.get_by_label("Password", exact=True).fill(password)
        page.get_by_label("Password again").fill(password_2)
        page.get_by_role("button", name="Create account").click()

    def token(self) -> str:
        """The bearer token the app holds (sessionStorage, this tab only)."""
        return self.page.evaluate("JSON.parse(sessionStorage.getItem('idrl.session')).token")

    def screenshot(
        self, name: str, ready: Callable[[], None] | None = None, *, full_page: bool = True
    ) -> None:
        """<name>-desktop.png and <name>-phone.png of the page as it is, in ``SCREENSHOTS``
        (the whole page, or only the window: a modal dialog covers only the window)."""
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        size = self.page.viewport_size
        try:
            for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                self.page.set_viewport_size(viewport)
                if ready is not None:
                    ready()
                self.page.screenshot(path=SCREENSHOTS / f"{name}-{label}.png", full_page=full_page)
                # The phone width never scrolls sideways.
                overflow = self.page.evaluate(
                    "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                )
                assert overflow <= 0, f"{name} scrolls sideways by {overflow} px at {viewport['width']} px"
        finally:
            if size:
                self.page.set_viewport_size(size)

    def assert_accessible(self) -> None:
        """axe-core on the page as it is: no serious or critical violation."""
        # Evaluated through the DevTools protocol: the page's CSP (no inline script) does
        # not apply to it, and the app's own policy stays in force.
        if not self.page.evaluate("typeof window.axe !== 'undefined'"):
            self.page.evaluate(AXE_SOURCE.read_text())
        results = self.page.evaluate("axe.run(document, {resultTypes: ['violations']})")
        bad = [
            f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
            for v in results["violations"]
            if v["impact"] in ("serious", "critical")
        ]
        assert not bad, "axe-core violations:\n" + "\n".join(bad)

    def assert_nothing_ran(self) -> None:
        """No injected script ran: no dialog, no XSS flag, no page error."""
        assert self.page.evaluate("window.__xss") is None
        assert self.dialogs == []
        assert self.page_errors == []


def first_load_bytes() -> dict[str, int]:
    """Gzip-compressed size of each JavaScript and CSS file the built index.html loads."""
    import re

    html = (WEB_DIST / "index.html").read_text()
    sizes = {}
    for path in re.findall(r'(?:src|href)="(/assets/[^"]+\.(?:js|css))"', html):
        raw = (WEB_DIST / path.lstrip("/")).read_bytes()
        sizes[path] = len(gzip.compress(raw, compresslevel=9))
    return sizes
