"""The errors a client can be shown: each carries its HTTP status, a code for WebSocket errors, and its body.

HTTP bodies follow the reference client's conventions: 400 is ``{"field": ["message", ...]}`` (with
``non_field_errors`` for what belongs to no single field), every other status is ``{"detail": "..."}``.
"""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """Base class: a failure caused by the request, reported to the client as-is."""

    status = 500
    code = "error"

    def __init__(self, detail: str = "", *, code: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail}

    def headers(self) -> dict[str, str]:
        return {}


class ValidationFailed(APIError):
    """400: one or more fields are wrong; ``errors`` maps each field to its messages."""

    status = 400
    code = "invalid"

    def __init__(self, errors: dict[str, list[str]], *, code: str | None = None) -> None:
        self.errors = errors
        first = next(iter(errors.items()), ("non_field_errors", ["invalid input"]))
        super().__init__(f"{first[0]}: {first[1][0]}", code=code)

    @classmethod
    def field(cls, name: str, message: str, *, code: str | None = None) -> ValidationFailed:
        return cls({name: [message]}, code=code)

    def body(self) -> dict[str, Any]:
        return dict(self.errors)


class AuthenticationFailed(APIError):
    status = 401
    code = "not_authenticated"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="api"'}


class TokenRefused(APIError):
    """A token presented on an open socket (``authenticate``) was refused; the socket keeps the token it had."""

    status = 401
    code = "unauthorized"


class PermissionDenied(APIError):
    status = 403
    code = "forbidden"


class NotFound(APIError):
    status = 404
    code = "not_found"


class Conflict(APIError):
    status = 409
    code = "conflict"


class UnsupportedMediaType(APIError):
    status = 415
    code = "unsupported_media_type"


class TooManyRequests(APIError):
    status = 429
    code = "throttled"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class ServiceUnavailable(APIError):
    """503: a service the server needs (the database) is away; ``retry_after`` seconds is a good wait."""

    status = 503
    code = "unavailable"

    def __init__(self, detail: str, *, retry_after: int = 1, cause: str = "") -> None:
        super().__init__(detail)
        self.retry_after = retry_after
        self.cause = cause  # for the log only: what failed underneath

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class BrokerUnavailable(Exception):
    """The broker cannot carry events between workers right now (Redis is down or too slow).

    Not an APIError: what a client is told depends on what was already done (see the trip-event policy).
    """
