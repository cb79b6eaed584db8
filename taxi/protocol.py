"""The /taxi/ WebSocket protocol, without any I/O: a text frame in, a typed command out; frames to send.

The reference client's envelope is ``{"type": ..., "data": ...}`` both ways. Parsing never looks at who
sent a message: identity comes from the socket's token, and the ids a payload repeats are only returned as
claims for the handler to compare.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from taxi.domain import STATUSES
from taxi.errors import PermissionDenied, ValidationFailed
from taxi.schemas import LocationFix, TripRequest, parse_location_fix, parse_trip_id, parse_trip_request

ECHO = "echo.message"
CREATE_TRIP = "create.trip"
UPDATE_TRIP = "update.trip"
ERROR = "error"
# Protocol version 2 (a socket opts in with the taxi.v2 subprotocol or ?protocol=2). A version 1 socket never
# receives these: the reference client treats every message it gets as a trip.
UPDATE_LOCATION = "update.location"
UPDATE_AVAILABILITY = "update.availability"
DRIVER_LOCATION = "driver.location"
# A version 2 socket is held to its access token: it renews it with AUTHENTICATE (answered AUTHENTICATED with the new
# expiry, or an ``unauthorized`` error), else it is closed with 4001 when the token expires.
AUTHENTICATE = "authenticate"
AUTHENTICATED = "authenticated"
V2_SUBPROTOCOL = "taxi.v2"
V2_TYPES = (UPDATE_LOCATION, UPDATE_AVAILABILITY, AUTHENTICATE)
# Sent instead of processing a message over the socket's rate (TAXI_WS_MESSAGES_PER_S), on both versions.
RATE_LIMITED = "rate_limited"


class ProtocolError(Exception):
    """A frame that is not a message of this protocol; ``code`` is the error code sent back."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class Echo:
    data: Any


@dataclass(frozen=True)
class CreateTrip:
    form: TripRequest


@dataclass(frozen=True)
class UpdateTrip:
    trip_id: uuid.UUID
    status: str
    rider_claim: int | None  # the rider the driver believes the trip has: the trip rules check it


@dataclass(frozen=True)
class UpdateLocation:
    fix: LocationFix


@dataclass(frozen=True)
class UpdateAvailability:
    available: bool


@dataclass(frozen=True)
class Authenticate:
    token: str


Command = Echo | CreateTrip | UpdateTrip | UpdateLocation | UpdateAvailability | Authenticate


def frame(kind: str, data: Any) -> str:
    """One outgoing message as the text of a frame."""
    return orjson.dumps({"type": kind, "data": data}).decode()


def error_frame(code: str, detail: str, fields: dict[str, list[str]] | None = None) -> str:
    data: dict[str, Any] = {"code": code, "detail": detail}
    if fields:
        data["fields"] = fields
    return frame(ERROR, data)


def parse_envelope(raw: str | bytes) -> tuple[str, Any]:
    """The ``type`` and ``data`` of a frame; ProtocolError when it is not a JSON object with a string type."""
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


def parse_command(kind: str, data: Any, caller_id: int, version: int = 1) -> Command:
    """The command a message of ``caller_id``, on a socket of protocol ``version``, carries.

    ValidationFailed (code ``invalid``) for bad fields; PermissionDenied when the payload names someone else
    as the author (the reference client repeats its own id as ``rider`` or ``driver``).
    """
    if kind == ECHO:
        return Echo(data)
    if kind == CREATE_TRIP:
        body = require_data(data)
        check_identity(body.get("rider"), caller_id, "rider")
        return CreateTrip(parse_trip_request(body))
    if kind == UPDATE_TRIP:
        body = require_data(data)
        trip_id = parse_trip_id(body.get("id"))
        status = body.get("status")
        if not isinstance(status, str) or status not in STATUSES:
            raise ValidationFailed.field("status", f"Must be one of {', '.join(STATUSES)}.")
        check_identity(body.get("driver"), caller_id, "driver")
        return UpdateTrip(trip_id, status, identity_of(body.get("rider"), "rider"))
    if kind in V2_TYPES:
        if version < 2:
            raise ProtocolError(
                "unknown_type",
                f"{kind} is a message of protocol version 2: connect with the {V2_SUBPROTOCOL} subprotocol "
                "or ?protocol=2 to use it.",
            )
        return _parse_v2(kind, require_data(data))
    expected = (ECHO, CREATE_TRIP, UPDATE_TRIP, *(V2_TYPES if version >= 2 else ()))
    raise ProtocolError("unknown_type", f"Unknown message type {kind[:64]!r}: expected one of {', '.join(expected)}.")


def _parse_v2(kind: str, body: dict[str, Any]) -> Command:
    if kind == UPDATE_LOCATION:
        return UpdateLocation(parse_location_fix(body))
    if kind == AUTHENTICATE:
        token = body.get("token")
        if not isinstance(token, str):
            raise ValidationFailed.field("token", f"Expected an access token (a string), got {type(token).__name__}.")
        return Authenticate(token)
    available = body.get("available")
    if not isinstance(available, bool):
        raise ValidationFailed.field("available", f"Expected true or false, got {type(available).__name__}.")
    return UpdateAvailability(available)


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
