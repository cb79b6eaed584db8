"""One error handler: every failure becomes JSON in the documented shape, and no URL (with its token) is logged.

Only our own errors (``APIError``) and Sanic's HTTP errors are answered as what they are; anything else is a
bug, answered 500 and logged with its traceback.
"""

from __future__ import annotations

import logging

from sanic import HTTPResponse, Request
from sanic.exceptions import MethodNotAllowed, PayloadTooLarge, RequestCancelled, SanicException, WebsocketClosed
from sanic.handlers import ErrorHandler

from taxi.api.common import json_response
from taxi.api.headers import allowed_methods
from taxi.api.oversize import head_too_large
from taxi.errors import APIError, ServiceUnavailable

log = logging.getLogger("taxi.errors")


class JSONErrorHandler(ErrorHandler):
    @staticmethod
    def log(request: Request, exception: Exception) -> None:
        """Sanic's own version logs the full URL, and a socket's URL carries its access token: path only."""
        if isinstance(exception, WebsocketClosed):
            return  # the client went away mid-handler: nothing went wrong on our side
        if not getattr(exception, "quiet", False):
            log.error("%s %s raised %r", request.method, request.path, exception, exc_info=exception)

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client hung up mid-request: nobody will read an answer, and it is not our error.
            return HTTPResponse(status=503)
        if isinstance(exception, APIError):
            if isinstance(exception, ServiceUnavailable):
                log.warning("%s %s: service unavailable: %s", request.method, request.path, exception.cause)
            return json_response(exception.body(), exception.status, exception.headers())
        if isinstance(exception, SanicException):
            status = exception.status_code or 500
            headers = dict(getattr(exception, "headers", None) or {})
            if status == 400:
                return json_response({"non_field_errors": [str(exception) or "Bad request."]}, 400, headers)
            if isinstance(exception, PayloadTooLarge) and (head := head_too_large(request, exception)):
                status, detail = head
            elif isinstance(exception, PayloadTooLarge):
                limit = request.app.config.REQUEST_MAX_SIZE
                detail = f"Request body is too large: at most {limit} bytes are accepted."
            elif isinstance(exception, MethodNotAllowed):
                detail = f'Method "{request.method}" not allowed.'
                headers.setdefault("Allow", ", ".join(allowed_methods(request)))
            elif status == 404:
                detail = "Not found."
            elif status < 500:
                detail = str(exception) or "Request refused."
            else:
                log.error("%s %s failed: %r", request.method, request.path, exception)
                detail = "Internal server error."
            return json_response({"detail": detail}, status, headers)
        # Path only: the query string may carry a token.
        log.exception("%s %s raised an unexpected error", request.method, request.path, exc_info=exception)
        return json_response({"detail": "Internal server error."}, 500)
