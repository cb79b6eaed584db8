"""Liveness for load balancers: a constant answer that touches neither the database nor Redis."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from taxi.api.common import json_response

bp = Blueprint("health", url_prefix="/api")

_OK = {"status": "ok"}


@bp.get("/health/")
async def health(request: Request) -> HTTPResponse:
    return json_response(_OK)
