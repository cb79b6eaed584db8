"""``GET /api/drivers/nearby/``: the available drivers around a point, for a rider's map before requesting.

Positions are rounded to about 100 m and carry no identity: a rider learns that cars are around, not whose
or exactly where.
"""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from taxi.api.common import json_response
from taxi.api.context import TaxiRequest
from taxi.api.guard import authenticate
from taxi.errors import BrokerUnavailable, ServiceUnavailable
from taxi.geo import rounded
from taxi.schemas import parse_coordinates
from taxi.services.presence import NEARBY_LIMIT
from taxi.services.trips import require_rider

bp = Blueprint("drivers", url_prefix="/api/drivers")


@bp.get("/nearby/")
async def nearby(request: TaxiRequest) -> HTTPResponse:
    caller = await authenticate(request)
    require_rider(caller, "see nearby drivers")
    args = request.get_args(keep_blank_values=True)
    point = parse_coordinates(args.getlist("lat"), args.getlist("lng"))
    try:
        found = await request.app.ctx.presence.available_near(point)
    except BrokerUnavailable as exc:
        raise ServiceUnavailable("Drivers' positions are unavailable right now.", cause=repr(exc)) from exc
    return json_response(
        [
            {"lat": rounded(fix.lat), "lng": rounded(fix.lng), "heading": fix.heading}
            for _, fix, _ in found[:NEARBY_LIMIT]
        ]
    )
