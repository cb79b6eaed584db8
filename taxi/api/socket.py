"""The /taxi/ WebSocket route: the reference client's envelope ``{"type", "data"}`` both ways.

The handshake is refused (401) unless the query string carries a valid access token. A client opts in to
protocol version 2 by offering the ``taxi.v2`` subprotocol (selected in the handshake) or with ``?protocol=2``.
Before the first client message is read the socket joins its groups (see the trip-event policy). Bad messages
get ``{"type": "error", "data": {"code", "detail"}}`` and the socket stays open.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from sanic import Blueprint
from sanic.compat import Header
from sanic.server.websockets.impl import WebsocketImplProtocol

from taxi.api.context import TaxiRequest
from taxi.api.conversation import Conversation
from taxi.api.guard import authenticate_claims
from taxi.api.socket_token import SocketToken
from taxi.api.ws_transport import refuse_invalid_utf8, session_for
from taxi.domain import DRIVER
from taxi.errors import BrokerUnavailable, ServiceUnavailable, ValidationFailed
from taxi.protocol import V2_SUBPROTOCOL
from taxi.services.accounts import Caller

log = logging.getLogger("taxi.socket")

bp = Blueprint("socket")

UNAVAILABLE_CLOSE = 1013


@bp.on_request
async def handshake_guard(request: TaxiRequest) -> None:
    """Runs before the upgrade: a bad token gets a plain 401, never an accepted-then-dropped socket."""
    # Parsed here and not kept: request.args would cache every argument (the token too) on a request that an open
    # socket holds for its whole life.
    query = parse_qs(request.query_string, keep_blank_values=True)
    token = next((given for given in query.get("token", []) if given), None)
    request.ctx.caller, claims = await authenticate_claims(request, token)
    request.ctx.token_exp = claims["exp"]  # a version 2 socket is closed when its token expires
    asked = query.get("protocol", [])
    if asked not in ([], ["1"], ["2"]):
        raise ValidationFailed.field("protocol", f"Must be 1 or 2, got {', '.join(asked)[:32]!r}.")
    request.ctx.protocol_asked = 2 if asked == ["2"] else 1  # by the query string; a subprotocol is seen later


def protocol_version(request: TaxiRequest, ws: WebsocketImplProtocol) -> int:
    return 2 if ws.subprotocol == V2_SUBPROTOCOL else int(request.ctx.protocol_asked)


def forget_handshake(request: TaxiRequest) -> None:
    """Drop the handshake's header lines and raw head from the request an open socket holds for its whole life:
    nothing reads them after the upgrade (the request id and the caller are on ``request.ctx``). With the query
    string parsed without Sanic's cache (``handshake_guard``), 2.7 KB less per idle socket."""
    request.headers = Header()
    request.head = b""


@bp.websocket("/taxi/", subprotocols=[V2_SUBPROTOCOL])
async def taxi_socket(request: TaxiRequest, ws: WebsocketImplProtocol) -> None:
    refuse_invalid_utf8(ws)
    caller: Caller = request.ctx.caller
    ctx = request.app.ctx
    version = protocol_version(request, ws)
    forget_handshake(request)
    session = session_for(ws, ctx.settings.ws_queue_size, f"user {caller.id}", caller.id, version, ctx.meter)
    ctx.relay.open(session)
    ctx.keepalive.add(ws)
    ctx.meter.socket_opened(version)
    driver = caller.group == DRIVER
    token = SocketToken(request, caller.id, session) if version >= 2 else None
    try:
        if session.closed:  # the worker is stopping: closed with 1001 already
            return
        if token is not None:
            token.hold(request.ctx.token_exp)
        try:
            open_trips = await ctx.trips.open_trip_ids(caller)
            await ctx.events.connected(session, caller.group, open_trips)
        except (BrokerUnavailable, ServiceUnavailable) as exc:
            # Without its groups the socket would silently miss events: refuse it, the client retries.
            log.warning("socket of user %d refused: %r", caller.id, exc)
            ws.fail_connection(UNAVAILABLE_CLOSE, "service unavailable; try again shortly")
            return
        if driver:
            ctx.locations.connected(caller.id, open_trips)  # a driver's open trips are the ones it drives
        session.start()
        conversation = Conversation(
            caller,
            session,
            ctx.events,
            ctx.trips,
            ctx.presence,
            ctx.locations,
            meter=ctx.meter,
            limit=ctx.message_limit,
            token=token,
        )
        while not session.closed:
            raw = await ws.recv()
            if raw is None:
                break
            await conversation.handle(raw)
    finally:
        # The task is cancelled when the client goes away: cleanup must not await.
        ctx.relay.leave_all(session)
        ctx.keepalive.discard(ws)
        session.stop()
        ctx.meter.socket_closed(version)
        if token is not None:
            token.release()
        if driver:
            ctx.locations.disconnected(caller.id)
