"""The domain exceptions every service raises, each with its HTTP status and code.

They are turned into the error JSON in one place (:mod:`shared.web`).
"""

from __future__ import annotations


class DomainError(Exception):
    """An error the client caused or must be told about; never a bug."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code:
            self.code = code


class BadRequest(DomainError):
    status, code = 400, "bad_request"


class Unauthorized(DomainError):
    status, code = 401, "unauthorized"


class NotFound(DomainError):
    status, code = 404, "not_found"


class RequestTimeout(DomainError):
    status, code = 408, "request_timeout"


class Conflict(DomainError):
    status, code = 409, "conflict"


class PreconditionFailed(DomainError):
    status, code = 412, "precondition_failed"


class PayloadTooLarge(DomainError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(DomainError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(DomainError):
    status, code = 422, "unprocessable"


class RateLimited(DomainError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, retry_after: int, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = max(1, int(retry_after))


class DependencyUnavailable(DomainError):
    status, code = 503, "unavailable"
