"""Trips over HTTP: the caller's list and one trip by id. Changes happen over the WebSocket."""

from __future__ import annotations

from dataclasses import dataclass

from sanic import Blueprint, HTTPResponse, Request
from sanic_ext import openapi

from taxi.api.common import json_response
from taxi.api.guard import authenticate
from taxi.errors import NotFound, ValidationFailed
from taxi.schemas import parse_limit, parse_trip_id

bp = Blueprint("trips", url_prefix="/api/trip")


@bp.on_request
async def guard(request: Request) -> None:
    await authenticate(request)


@dataclass
class TripUser:
    id: int
    username: str
    first_name: str
    last_name: str
    group: str
    photo: str


@dataclass
class TripOut:
    id: str
    created: str
    updated: str
    pick_up_address: str
    drop_off_address: str
    status: str
    driver: TripUser
    rider: TripUser


@bp.get("/")
@openapi.summary("The trips the caller may see, newest first")
@openapi.description("A rider sees their own trips; a driver sees every REQUESTED trip and the trips they drive.")
@openapi.secured("token")
@openapi.parameter("limit", int, "query", description="at most this many trips (default 100, at most 500)")
@openapi.response(200, {"application/json": [TripOut]}, "Trips")
@openapi.response(401, {"application/json": dict}, "Not authenticated")
async def trip_list(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    limit = parse_limit(request.args.get("limit"), ctx.settings.trip_list_default, ctx.settings.trip_list_max)
    return json_response(await ctx.trips.list_for(request.ctx.caller, limit))


@bp.get("/<trip_id:str>/")
@openapi.summary("One trip, if the caller may see it")
@openapi.secured("token")
@openapi.response(200, {"application/json": TripOut}, "The trip")
@openapi.response(404, {"application/json": dict}, "Unknown, invisible or malformed id")
async def trip_detail(request: Request, trip_id: str) -> HTTPResponse:
    try:
        tid = parse_trip_id(trip_id)
    except ValidationFailed:
        raise NotFound("Not found.") from None
    trip = await request.app.ctx.trips.get_visible(request.ctx.caller, tid)
    return json_response(trip.data)
