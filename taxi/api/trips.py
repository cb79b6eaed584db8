"""Trips over HTTP: the caller's list, one trip by id, and a cancellation. Other changes happen over the WebSocket."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from taxi.api.common import body_of, json_response
from taxi.api.context import TaxiRequest
from taxi.api.guard import access_claims, bearer_token
from taxi.errors import NotFound, ValidationFailed
from taxi.protocol import parse_if_version
from taxi.schemas import parse_cancel, parse_limit, parse_trip_id
from taxi.services import cancellation
from taxi.services.accounts import active_user

bp = Blueprint("trips", url_prefix="/api/trip")


@bp.on_request
async def guard(request: TaxiRequest) -> None:
    # The token is checked here; that its user still exists and is active is checked by the same query
    # that reads the trips (one round trip instead of two on the hottest routes).
    request.ctx.claims = access_claims(request, bearer_token(request))


@bp.get("/")
async def trip_list(request: TaxiRequest) -> HTTPResponse:
    ctx = request.app.ctx
    # Blank values kept: "?limit=" is not an integer, and must not silently mean the default.
    values = request.get_args(keep_blank_values=True).getlist("limit")
    limit = parse_limit(values, ctx.settings.trip_list_default, ctx.settings.trip_list_max)
    claims = request.ctx.claims
    return json_response(await ctx.trips.list_for_user(claims["id"], str(claims.get("group")), limit))


@bp.get("/<trip_id:str>/")
async def trip_detail(request: TaxiRequest, trip_id: str) -> HTTPResponse:
    try:
        tid = parse_trip_id(trip_id)
    except ValidationFailed:
        await active_user(request.ctx.claims["id"])  # a refused user hears 401 first, whatever the path
        raise NotFound("Not found.") from None
    trips = request.app.ctx.trips
    return json_response(await trips.out_live(await trips.get_for_user(request.ctx.claims["id"], tid)))


@bp.post("/<trip_id:str>/cancel/")
async def trip_cancel(request: TaxiRequest, trip_id: str) -> HTTPResponse:
    """The rider cancels its trip, or the trip's driver hands it back (see ``cancel.trip`` on the WebSocket)."""
    caller = await active_user(request.ctx.claims["id"])
    body = body_of(request)
    try:
        cancel = parse_cancel(body, trip_id)
    except ValidationFailed as exc:
        if "id" in exc.errors:
            raise NotFound("Not found.") from None  # a path that names no trip, like the detail route
        raise
    ctx = request.app.ctx
    out = await cancellation.cancel(
        ctx.trips, ctx.events, caller, cancel.trip_id, cancel.reason, parse_if_version(body.get("version"))
    )
    return json_response(out)
