"""Trips over HTTP: the caller's list (paged: RFC 8288 ``Link: <...>; rel="next"``) and one trip by id. Changes
happen over the WebSocket."""

from __future__ import annotations

from urllib.parse import urlencode

from sanic import Blueprint, HTTPResponse

from taxi.api.common import json_response
from taxi.api.context import TaxiRequest
from taxi.api.guard import access_claims, bearer_token
from taxi.errors import NotFound, ValidationFailed
from taxi.paging import encode_cursor, parse_list_query
from taxi.schemas import parse_trip_id
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
    settings = ctx.settings
    # Blank values kept: "?limit=" is not an integer, and must not silently mean the default.
    args = request.get_args(keep_blank_values=True)
    given = {name: args.getlist(name) for name in ("limit", "status", "cursor") if name in args}
    query = parse_list_query(given, settings.trip_list_default, settings.trip_list_max, settings.secret_key)
    claims = request.ctx.claims
    page = await ctx.trips.list_for_user(
        claims["id"], str(claims.get("group")), query.limit, query.status, query.before
    )
    if page.next is None:
        return json_response(page.trips)
    # The next page keeps the limit and status the client chose (absent stays absent: the default applies).
    kept = [(name, str(value)) for name, value in (("limit", query.limit), ("status", query.status)) if name in given]
    next_query = urlencode([*kept, ("cursor", encode_cursor(page.next, settings.secret_key))])
    # Relative to the request's URL (RFC 8288), like photo URLs, unless TAXI_PUBLIC_URL says where clients reach us.
    link = f"{settings.public_url or ''}{bp.url_prefix}/?{next_query}"
    return json_response(page.trips, headers={"Link": f'<{link}>; rel="next"'})


@bp.get("/<trip_id:str>/")
async def trip_detail(request: TaxiRequest, trip_id: str) -> HTTPResponse:
    try:
        tid = parse_trip_id(trip_id)
    except ValidationFailed:
        await active_user(request.ctx.claims["id"])  # a refused user hears 401 first, whatever the path
        raise NotFound("Not found.") from None
    trips = request.app.ctx.trips
    return json_response(await trips.out_live(await trips.get_for_user(request.ctx.claims["id"], tid)))
