"""What every HTTP service shares: the error JSON, request-body parsing and health routes.

Every error leaves as ``{"error": {"code": ..., "message": ...}}`` with its status; an
unexpected exception is logged with its traceback and answered with a bare 500 body,
never the traceback itself.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy.exc
from flask import Blueprint, Flask, Response, jsonify, request
from flask.json.provider import DefaultJSONProvider
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from shared.errors import (
    BadRequest,
    DependencyUnavailable,
    DomainError,
    PayloadTooLarge,
    RateLimited,
    Unprocessable,
    UnsupportedMediaType,
)

log = logging.getLogger(__name__)
Model = TypeVar("Model", bound=BaseModel)

# The database is unreachable or the connection broke (outage, restart, failover): a
# dependency down (503, the client retries), not a bug. Other database errors stay 500.
_DATABASE_DOWN = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)

# Pydantic error types that mean "the request is malformed" (400) rather than
# "well-formed but not acceptable" (422).
_SHAPE_ERRORS = (
    "missing",
    "string_type",
    "int_type",
    "int_parsing",
    "bool_type",
    "float_type",
    "dict_type",
    "list_type",
    "model_type",
    "json_invalid",
)


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The one way an error leaves any service."""
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _domain_error(exc: DomainError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
    if exc.status >= 500:
        log.warning("dependency unavailable: %s", exc.message)
    return error_response(exc.status, exc.code, exc.message, headers)


def _http_error(exc: HTTPException) -> Response:
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(exc.code or 500, code, exc.description or exc.name)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(exc.valid_methods)
    return response


def _database_down(exc: Exception) -> Response:
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.path,
        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
    )
    return _domain_error(DependencyUnavailable("the database is unavailable; retry shortly"))


def _unexpected(exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.path)
    return error_response(500, "internal", "internal error")


# A body up to this size that the answer did not need (a 401 before the JSON was read) is
# still read before the answer leaves. The gateway streams bodies to the services
# unbuffered; an answer that comes back before the gateway has the whole body makes it
# close the client's connection after answering, although that answer said keep-alive,
# and the client's next request on it gets no answer. Larger bodies are not waited for:
# their connection ends after the early answer (docs/reliability.md).
UNREAD_BODY_DRAIN_BYTES = 64 * 1024


def read_unread_body(response: Response) -> Response:
    """An ``after_request`` hook: read what is left of a small request body."""
    length = request.content_length
    if not length or length > UNREAD_BODY_DRAIN_BYTES:
        return response
    body = request.environ.get("wsgi.input")
    if body is None:
        return response
    left = length
    try:
        # The server's input ends at the declared length: a body already read gives b"".
        while left > 0 and (chunk := body.read(min(left, 16 * 1024))):
            left -= len(chunk)
    except (OSError, ValueError) as exc:  # the client went away: nothing left to keep alive
        log.debug("request body not read to its end: %s", exc)
    return response


def init_app(app: Flask) -> None:
    """Register the error handlers, read small unread bodies before answering, and make
    JSON output stable (UTF-8, unsorted)."""
    assert isinstance(app.json, DefaultJSONProvider)  # the provider these two options belong to
    app.json.ensure_ascii = False
    app.json.sort_keys = False
    app.after_request(read_unread_body)
    app.register_error_handler(DomainError, _domain_error)
    app.register_error_handler(HTTPException, _http_error)
    for database_down in _DATABASE_DOWN:
        app.register_error_handler(database_down, _database_down)
    app.register_error_handler(Exception, _unexpected)


def json_body(model: type[Model], *, max_bytes: int) -> Model:
    """Parse and validate the request's JSON body into ``model``.

    415 unless the body is ``application/json``; 413 past ``max_bytes``; 400 for malformed
    JSON, a non-object, missing fields or wrong types; 422 for values that break a rule,
    text PostgreSQL cannot store, or fields the client may not send.
    """
    return validated(model, json_object(max_bytes=max_bytes))


def json_object(*, max_bytes: int) -> dict[str, Any]:
    """The request's JSON body as a dict, checked as :func:`json_body` does but not yet
    validated (for a route that picks the model by the body's fields)."""
    if request.mimetype != "application/json":
        raise UnsupportedMediaType("send a JSON body with Content-Type: application/json")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"JSON bodies are limited to {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"JSON bodies are limited to {max_bytes} bytes")
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadRequest("the body is not valid JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object", code="invalid_json")
    if not _storable(body):
        raise Unprocessable(
            "strings may not contain NUL characters or unpaired surrogates", code="invalid_text"
        )
    return body


def validated(model: type[Model], body: dict[str, Any]) -> Model:
    """``body`` (from :func:`json_object`) validated into ``model``: 400 or 422."""
    try:
        return model.model_validate(body, strict=True)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _storable(value: object) -> bool:
    """Whether every string in a parsed JSON value is text PostgreSQL can store: JSON
    allows ``\\u0000`` and lone surrogates, a ``text`` column accepts neither."""
    if isinstance(value, str):
        if "\x00" in value:
            return False
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
        return True
    if isinstance(value, dict):
        return all(_storable(k) and _storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_storable(item) for item in value)
    return True


def _validation_error(exc: ValidationError) -> DomainError:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    parts = []
    shape = False
    for error in errors:
        field = ".".join(str(p) for p in error["loc"]) or "body"
        if error["type"] == "extra_forbidden":
            parts.append(f"{field}: may not be set")
        else:
            parts.append(f"{field}: {error['msg']}")
            shape = shape or error["type"] in _SHAPE_ERRORS
    message = "; ".join(parts)
    if shape:
        return BadRequest(message, code="invalid_request")
    return Unprocessable(message, code="invalid_field")


def health_blueprint(readiness_checks: Mapping[str, Callable[[], None]], prefix: str = "") -> Blueprint:
    """``/healthz`` (the process answers) and ``/readyz`` (each named check passes).

    A check is a callable that raises when its dependency is not usable.
    """
    health = Blueprint("health", __name__, url_prefix=prefix or None)

    @health.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @health.get("/readyz")
    def readyz() -> tuple[dict[str, object], int]:
        results: dict[str, str] = {}
        for name, check in readiness_checks.items():
            try:
                check()
                results[name] = "ok"
            except Exception as exc:  # noqa: BLE001 - a readiness probe reports any failure
                log.warning("readiness check %s failed: %s", name, exc)
                results[name] = "unavailable"
        ready = all(value == "ok" for value in results.values())
        return {"status": "ok" if ready else "unavailable", "checks": results}, (200 if ready else 503)

    return health
