"""The /taxi/ WebSocket: the reference client's envelope ``{"type", "data"}`` both ways.

The handshake is refused (401) unless the query string carries a valid access token. Before the first
client message is read the socket joins its groups: ``drivers`` for a driver, and the group of each of
the user's trips that is not COMPLETED. Bad messages get ``{"type": "error", "data": {"code", "detail"}}``
and the socket stays open.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

import orjson
from sanic import Blueprint, Request
from sanic.server.websockets.impl import WebsocketImplProtocol
from websockets.protocol import State

from taxi.api.errors import UNAVAILABLE
from taxi.api.guard import authenticate_token
from taxi.errors import APIError, AuthenticationFailed, PermissionDenied, ValidationFailed
from taxi.models import COMPLETED, DRIVER, RIDER, STARTED, STATUSES
from taxi.realtime import BrokerUnavailable, Relay, Session
from taxi.schemas import parse_trip_id, parse_trip_request
from taxi.services.accounts import Caller
from taxi.services.trips import Trips

log = logging.getLogger("taxi.socket")

bp = Blueprint("socket")

DRIVERS = "drivers"
ECHO = "echo.message"
UNAVAILABLE_CLOSE = 1013
POLICY_VIOLATION = 1008


def trip_group(trip_id: str) -> str:
    return f"trip:{trip_id}"


def frame(kind: str, data: Any) -> str:
    return orjson.dumps({"type": kind, "data": data}).decode()


def error_frame(code: str, detail: str, fields: dict[str, list[str]] | None = None) -> str:
    data: dict[str, Any] = {"code": code, "detail": detail}
    if fields:
        data["fields"] = fields
    return frame("error", data)


class ProtocolError(Exception):
    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@bp.on_request
async def handshake_guard(request: Request) -> None:
    """Runs before the upgrade: a bad token gets a plain 401, never an accepted-then-dropped socket."""
    request.ctx.caller = await authenticate_token(request, request.args.get("token"))


@bp.websocket("/taxi/")
async def taxi_socket(request: Request, ws: WebsocketImplProtocol) -> None:
    caller: Caller = request.ctx.caller
    ctx = request.app.ctx
    relay: Relay = ctx.relay
    session = Session(
        ws.send, ws.fail_connection, ctx.settings.ws_queue_size, label=f"user {caller.id}", write_now=immediate(ws)
    )
    relay.open(session)
    try:
        try:
            groups = [DRIVERS] if caller.group == DRIVER else []
            groups += [trip_group(t) for t in await ctx.trips.open_trip_ids(caller)]
            for group in groups:
                await relay.join(session, group)
        except (BrokerUnavailable, *UNAVAILABLE) as exc:
            # Without its groups the socket would silently miss events: refuse it, the client retries.
            log.warning("socket of user %d refused: %r", caller.id, exc)
            ws.fail_connection(UNAVAILABLE_CLOSE, "service unavailable; try again shortly")
            return
        session.start()
        conversation = Conversation(caller, session, relay, ctx.trips)
        while not session.closed:
            raw = await ws.recv()
            if raw is None:
                break
            await conversation.handle(raw)
    finally:
        # The task is cancelled when the client goes away: cleanup must not await.
        relay.leave_all(session)
        session.stop()


def immediate(ws: WebsocketImplProtocol) -> Callable[[str], bool]:
    """A synchronous send for a socket nobody else is writing to: frame the text and hand it to the transport.

    It declines (False, and the caller queues the frame for the writer task) whenever Sanic's own send path
    could be involved: a send or ping in progress (its lock is held), the transport's buffer over its
    high-water mark (backpressure), or a socket that is no longer open.
    """

    def write(text: str) -> bool:
        io = ws.io_proto
        transport = io.transport if io is not None else None
        if (
            transport is None
            or transport.is_closing()
            or ws.conn_mutex.locked()
            or ws.ws_proto.state is not State.OPEN
            or not io._can_write.is_set()  # type: ignore[union-attr]
        ):
            return False
        ws.ws_proto.send_text(text.encode())
        for data in ws.ws_proto.data_to_send():
            transport.write(data)
        return True

    return write


class Conversation:
    """One socket's messages, handled in order. Identity is the token's user; payload ids are only checked."""

    def __init__(self, caller: Caller, session: Session, relay: Relay, trips: Trips) -> None:
        self.caller = caller
        self.session = session
        self.relay = relay
        self.trips = trips

    def reply(self, text: str) -> None:
        self.session.offer(text)

    async def handle(self, raw: str | bytes) -> None:
        try:
            kind, data = parse_envelope(raw)
            if kind == ECHO:
                self.reply(frame(ECHO, data))
            elif kind == "create.trip":
                await self.create_trip(data)
            elif kind == "update.trip":
                await self.update_trip(data)
            else:
                raise ProtocolError(
                    "unknown_type",
                    f"Unknown message type {kind[:64]!r}: expected echo.message, create.trip or update.trip.",
                )
        except ProtocolError as exc:
            self.reply(error_frame(exc.code, exc.detail))
        except ValidationFailed as exc:
            self.reply(error_frame(exc.code, exc.detail, exc.errors))
        except AuthenticationFailed as exc:
            # The user was deactivated or deleted after connecting: say so, then end the socket.
            self.reply(error_frame(exc.code, exc.detail))
            self.session.close_when_sent(POLICY_VIOLATION, "user not found or inactive")
        except APIError as exc:
            self.reply(error_frame(exc.code, exc.detail))
        except UNAVAILABLE as exc:
            log.warning("socket of user %d: database unavailable: %r", self.caller.id, exc)
            self.reply(error_frame("unavailable", "The service is temporarily unavailable; try again shortly."))
        except Exception:
            # Our bug, not the client's: say so, keep the socket, and log without the URL (it holds the token).
            log.exception("socket of user %d: a message failed unexpectedly", self.caller.id)
            self.reply(error_frame("internal_error", "The message could not be processed."))

    async def create_trip(self, data: Any) -> None:
        if self.caller.group != RIDER:
            raise PermissionDenied("Only riders can request trips.")
        data = require_data(data)
        check_identity(data.get("rider"), self.caller.id, "rider")
        form = parse_trip_request(data)
        # Join the trip's group before the trip exists: once a driver can see it (HTTP list, broadcast),
        # the rider must already hear what the driver does with it.
        trip_id = uuid.uuid4()
        group = trip_group(str(trip_id))
        try:
            await self.relay.join(self.session, group)
        except BrokerUnavailable:
            pass  # the trip is still stored; deliver() below reports the broadcast failure to the sender
        try:
            trip = await self.trips.request(self.caller, form, trip_id)
        except BaseException:
            self.relay.leave(self.session, group)
            raise
        text = frame(ECHO, trip.data)
        await self.deliver(trip.id, text, also_drivers=True, what="The trip was requested")

    async def update_trip(self, data: Any) -> None:
        if self.caller.group != DRIVER:
            raise PermissionDenied("Only drivers can update trips.")
        data = require_data(data)
        trip_id = parse_trip_id(data.get("id"))
        status = data.get("status")
        if not isinstance(status, str) or status not in STATUSES:
            raise ValidationFailed.field("status", f"Must be one of {', '.join(STATUSES)}.")
        check_identity(data.get("driver"), self.caller.id, "driver")
        claimed_rider = identity_of(data.get("rider"), "rider")
        trip = await self.trips.advance(self.caller, trip_id, status, claimed_rider)
        text = frame(ECHO, trip.data)
        # After COMPLETED nothing more happens to the trip: every worker drops its group once delivered.
        await self.deliver(
            trip.id, text, also_drivers=status == STARTED, end=status == COMPLETED, what="The trip was updated"
        )
        if status == COMPLETED:
            self.relay.leave(self.session, trip_group(trip.id))

    async def deliver(self, trip_id: str, text: str, *, also_drivers: bool, what: str, end: bool = False) -> None:
        """The change is committed: join its group, answer the sender, then tell everyone else once."""
        group = trip_group(trip_id)
        replied = False
        try:
            await self.relay.join(self.session, group)
            self.reply(text)
            replied = True
            await self.relay.publish(group, text, exclude=self.session, end=end)
            if also_drivers:
                await self.relay.publish(DRIVERS, text, exclude=self.session)
        except BrokerUnavailable as exc:
            log.warning("socket of user %d: broadcast failed: %s", self.caller.id, exc)
            if not replied:
                self.reply(text)  # it is committed: the sender must still learn the trip as stored
            self.reply(
                error_frame(
                    "unavailable",
                    f"{what} and saved, but others could not be notified; "
                    "they will see it when they next fetch their trips.",
                )
            )


def parse_envelope(raw: str | bytes) -> tuple[str, Any]:
    if not isinstance(raw, str):
        raise ProtocolError("invalid_message", "Expected a text frame with a JSON object, got a binary frame.")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"Message is not valid JSON: {exc.args[0]}") from None
    if not isinstance(message, dict):
        raise ProtocolError("invalid_message", f"Expected a JSON object, got {type(message).__name__}.")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("invalid_message", 'Expected a string "type" in the message.')
    return kind, message.get("data")


def require_data(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ValidationFailed.field("data", f"Expected an object, got {type(data).__name__}.")
    return data


def identity_of(value: Any, field: str) -> int | None:
    """A user id the client sent (an id, its text, or a user object), or None when it sent none."""
    if value is None:
        return None
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    raise ValidationFailed.field(field, "Expected a user id.")


def check_identity(value: Any, caller_id: int, field: str) -> None:
    """A payload may repeat the caller's id (the reference client does) but never name anyone else."""
    claimed = identity_of(value, field)
    if claimed is not None and claimed != caller_id:
        raise PermissionDenied(f"You can only act as yourself: {field} must be your own id or absent.")
