"""Trips over HTTP: the caller's list and one trip by id. Changes happen over the WebSocket."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse, Request

from taxi.api.common import json_response
from taxi.api.guard import authenticate
from taxi.errors import NotFound, ValidationFailed
from taxi.schemas import parse_limit, parse_trip_id

bp = Blueprint("trips", url_prefix="/api/trip")


@bp.on_request
async def guard(request: Request) -> None:
    await authenticate(request)


@bp.get("/")
async def trip_list(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    limit = parse_limit(request.args.get("limit"), ctx.settings.trip_list_default, ctx.settings.trip_list_max)
    return json_response(await ctx.trips.list_for(request.ctx.caller, limit))


@bp.get("/<trip_id:str>/")
async def trip_detail(request: Request, trip_id: str) -> HTTPResponse:
    try:
        tid = parse_trip_id(trip_id)
    except ValidationFailed:
        raise NotFound("Not found.") from None
    trip = await request.app.ctx.trips.get_visible(request.ctx.caller, tid)
    return json_response(trip.data)
