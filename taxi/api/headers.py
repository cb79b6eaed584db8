"""Headers every HTTP response carries, whoever produced it (a handler, the error handler, sanic-ext)."""

from __future__ import annotations

from sanic import Request, Sanic
from sanic.constants import HTTP_METHODS
from sanic.exceptions import MethodNotAllowed, NotFound
from sanic.response import BaseHTTPResponse


def add_response_headers(app: Sanic, cors: bool) -> None:
    """``X-Content-Type-Options: nosniff`` on every response; with CORS on, ``Vary: Origin`` on every response too.

    The CORS headers depend on the request's Origin (none without one, none for an origin not allowed), so a
    shared cache must key every answer on it, not only the answers that happen to carry the CORS headers.
    """

    async def headers(request: Request, response: BaseHTTPResponse) -> None:
        response.headers["X-Content-Type-Options"] = "nosniff"
        if cors:
            vary = [v.strip() for v in ",".join(response.headers.getall("vary", [])).split(",") if v.strip()]
            if "origin" not in {v.lower() for v in vary}:
                vary.append("Origin")
            response.headers["Vary"] = ", ".join(vary)

    app.register_middleware(headers, "response")


def allowed_methods(request: Request) -> list[str]:
    """The methods the router accepts on this request's path (for the ``Allow`` of a 405, which RFC 9110 requires;
    the router leaves it out for paths with parameters)."""
    found = []
    for method in HTTP_METHODS:
        try:
            request.app.router.get(request.path, method, request.headers.get("host"))
        except (MethodNotAllowed, NotFound):
            continue
        found.append(str(method))
    return found
