"""``/openapi.json``: the OpenAPI 3 document of the api and auth endpoints.

The document is a file beside this module (``openapi.json``), read once at import; the
tests check that every route answers as it says.
"""

from __future__ import annotations

import json
from pathlib import Path

from flask import Blueprint, current_app

DOCUMENT_PATH = Path(__file__).with_name("openapi.json")
SPEC = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))

document = Blueprint("openapi", __name__)


@document.get("/openapi.json")
def openapi_json():
    response = current_app.json.response(SPEC)
    response.headers["Cache-Control"] = "public, max-age=300"
    return response
