"""What the server tells its operator about HTTP traffic: ``GET /metrics``, request ids, the access log and the
per-request measurements.

``/metrics`` exists only with ``TAXI_METRICS=1``; with ``TAXI_METRICS_TOKEN`` set it needs that token as a Bearer
credential (compared in constant time). Each response is counted by route template (never the raw path, which
a client controls) and method and status, and its latency observed.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
import uuid
from pathlib import Path

from sanic import Blueprint, HTTPResponse, Sanic
from sanic.response import BaseHTTPResponse, raw

from taxi import logs
from taxi.api.context import TaxiRequest
from taxi.errors import AuthenticationFailed
from taxi.metrics import PrometheusMeter, scrape

# The content type of the Prometheus text format, version 0.0.4 (what prometheus-client's generate_latest writes).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # the route label of a request no route matched (404, and 405 before routing)

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")  # a client's id is echoed and logged: nothing else is taken

access_log = logging.getLogger("taxi.access")

bp = Blueprint("metrics")


@bp.get("/metrics")
async def metrics(request: TaxiRequest) -> HTTPResponse:
    ctx = request.app.ctx
    token = ctx.settings.metrics_token
    if token:
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise AuthenticationFailed("The metrics need the Bearer token set in TAXI_METRICS_TOKEN.")
    directory: Path = ctx.metrics_dir  # type: ignore[assignment]
    body = await asyncio.get_running_loop().run_in_executor(None, scrape, directory)
    return raw(body, content_type=TEXT_FORMAT)


def install(app: Sanic, meter: PrometheusMeter | None, access_log: bool) -> None:
    """Give every request an id (the client's ``X-Request-ID`` when it is a sane one, else a new one), echo it in
    the response and in every log line written while serving it; count and time each response when ``meter`` is
    given; with ``access_log``, log one line per response (the path without its query string: tokens go there)."""

    async def begin(request: TaxiRequest) -> None:
        request.ctx.started = time.perf_counter()
        given = request.headers.get(REQUEST_ID_HEADER)
        rid = given if given and _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        request.ctx.request_id = rid
        logs.request_id.set(rid)

    async def end(request: TaxiRequest, response: BaseHTTPResponse) -> None:
        began = getattr(request.ctx, "started", None)
        seconds = time.perf_counter() - began if began is not None else 0.0
        rid = getattr(request.ctx, "request_id", None)
        if rid is None:  # answered before the request middleware ran (no route matched)
            given = request.headers.get(REQUEST_ID_HEADER)
            rid = given if given and _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        response.headers[REQUEST_ID_HEADER] = rid
        route = request.route
        if meter is not None:
            meter.request(
                "/" + route.path if route is not None else UNMATCHED, request.method, response.status, seconds
            )
        if access_log:
            _access(request, response.status, seconds, rid)
        logs.request_id.set(None)  # the connection's task serves the next request of a kept-alive connection

    app.register_middleware(begin, "request", priority=1000)  # first in, so the latency covers the others
    app.register_middleware(end, "response", priority=-1000)


def _access(request: TaxiRequest, status: int, seconds: float, rid: str) -> None:
    fields = {
        "method": request.method,
        "path": request.path,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "client": request.remote_addr or request.ip,
        "request_id": rid,
    }
    access_log.info("%s %s %d %.1fms", request.method, request.path, status, seconds * 1000, extra={"fields": fields})
