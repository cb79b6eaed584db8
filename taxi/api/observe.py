"""What the server tells its operator about HTTP traffic: ``GET /metrics``, and the per-request measurements.

``/metrics`` exists only with ``TAXI_METRICS=1``; with ``TAXI_METRICS_TOKEN`` set it needs that token as a Bearer
credential (compared in constant time). Each response is counted by route template (never the raw path, which
a client controls) and method and status, and its latency observed.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from pathlib import Path

from sanic import Blueprint, HTTPResponse, Sanic
from sanic.response import BaseHTTPResponse, raw

from taxi.api.context import TaxiRequest
from taxi.errors import AuthenticationFailed
from taxi.metrics import PrometheusMeter, scrape

# The content type of the Prometheus text format, version 0.0.4 (what prometheus-client's generate_latest writes).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"
UNMATCHED = "unmatched"  # the route label of a request no route matched (404, and 405 before routing)

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


def measure_requests(app: Sanic, meter: PrometheusMeter) -> None:
    """Count every HTTP response by route template, method and status, and observe its latency."""

    async def started(request: TaxiRequest) -> None:
        request.ctx.started = time.perf_counter()

    async def finished(request: TaxiRequest, response: BaseHTTPResponse) -> None:
        route = request.route
        label = "/" + route.path if route is not None else UNMATCHED
        began = getattr(request.ctx, "started", None)
        seconds = time.perf_counter() - began if began is not None else 0.0
        meter.request(label, request.method, response.status, seconds)

    app.register_middleware(started, "request", priority=1000)  # first in, so the latency covers the others
    app.register_middleware(finished, "response", priority=-1000)
