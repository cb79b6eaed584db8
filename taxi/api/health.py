"""Liveness for load balancers: a constant answer that touches neither the database nor Redis."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from taxi.api.common import json_response
from taxi.api.context import TaxiRequest

bp = Blueprint("health", url_prefix="/api")

_OK = {"status": "ok"}


@bp.get("/health/")
async def health(request: TaxiRequest) -> HTTPResponse:
    return json_response(_OK)
