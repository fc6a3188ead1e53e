"""The built web app: what it loads, how big it is, and the headers the gateway serves
it with."""

from __future__ import annotations

import re

import requests

from infra.local.gateway import WEB_CSP
from tests.support.web import WEB_DIST, first_load_bytes

FIRST_LOAD_LIMIT = 150 * 1024


def test_first_load_is_under_150_kb_of_compressed_javascript_and_css(web_build):
    sizes = first_load_bytes()
    assert any(path.endswith(".js") for path in sizes) and any(path.endswith(".css") for path in sizes)
    total = sum(sizes.values())
    print(f"first load, gzip -9: {total} bytes {sizes}")
    assert total < FIRST_LOAD_LIMIT, sizes


def test_assets_are_named_by_their_content_and_nothing_is_inline_or_third_party(web_build):
    html = (WEB_DIST / "index.html").read_text()
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script in index.html"
    assert "<style" not in html and " style=" not in html
    assets = sorted((WEB_DIST / "assets").iterdir())
    assert assets
    for asset in assets:
        assert re.fullmatch(r"[\w.-]+-[\w-]{8}\.(js|css)", asset.name), asset.name
        text = asset.read_text()
        # Nothing is fetched from another origin at run time.
        assert not re.search(r"""(?:src|href|import)\s*\(?\s*["']https?://""", text), asset.name
    assert not re.search(r"""(?:src|href)=["'](?:https?:)?//""", html)


def test_the_gateway_serves_the_app_with_its_security_and_cache_headers(web_build, local_stack):
    page = requests.get(f"{local_stack.base_url}/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    csp = page.headers["Content-Security-Policy"]
    assert csp == WEB_CSP
    directives = dict(part.strip().split(" ", 1) for part in csp.split(";"))
    assert directives["script-src"] == "'self'" and "unsafe-inline" not in csp
    assert directives["frame-ancestors"] == "'none'"
    assert "http" not in csp  # no other origin
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"

    asset = re.search(r'src="(/assets/[^"]+\.js)"', page.text).group(1)
    script = requests.get(f"{local_stack.base_url}{asset}", timeout=10, headers={"Accept-Encoding": "gzip"})
    assert script.status_code == 200
    assert script.headers["Content-Type"].startswith(("application/javascript", "text/javascript"))
    assert script.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert script.headers["Content-Security-Policy"] == WEB_CSP
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert script.headers.get("Content-Encoding") == "gzip"

    # A method the files do not take is the gateway's 405 in the error shape, as JSON.
    refused = requests.delete(f"{local_stack.base_url}/", timeout=10)
    assert refused.status_code == 405 and refused.headers["Content-Type"].startswith("application/json")
    assert refused.json()["error"]["code"] == "method_not_allowed"

    # The api keeps every other path, with its own error shape.
    missing = requests.get(f"{local_stack.base_url}/assets/not-there.js", timeout=10)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    spec = requests.get(f"{local_stack.base_url}/openapi.json", timeout=10)
    assert spec.status_code == 200 and "paths" in spec.json()
