"""The AsyncAPI 3.0 description of the ``/taxi/`` WebSocket (served at ``/docs/asyncapi.json``).

Built from what the server itself uses: the message names of ``taxi.protocol``, the limits of ``taxi.schemas`` and
the trip and user shapes of the OpenAPI document (``taxi.api.spec``), turned from OpenAPI's ``nullable`` into
JSON Schema. Messages of protocol version 2 carry ``x-protocol-versions: [2]``; the rest are in both versions.
"""

from __future__ import annotations

import copy
from typing import Any

from taxi import __version__
from taxi.api.spec import SCHEMAS
from taxi.domain import STATUSES
from taxi.protocol import (
    AUTHENTICATE,
    AUTHENTICATED,
    CANCEL_TRIP,
    CREATE_TRIP,
    DRIVER_LOCATION,
    ECHO,
    ERROR,
    RESUME,
    RESUME_DONE,
    RESUME_REQUIRED,
    UPDATE_AVAILABILITY,
    UPDATE_LOCATION,
    UPDATE_TRIP,
    V2_SUBPROTOCOL,
)
from taxi.schemas import MAX_ADDRESS, MAX_REASON, MAX_RESUME_TRIPS, MAX_SPEED

_TEXT = r"^[^\u0000]*$"  # no NUL character, as every text field of the API
BOTH, V2 = [1, 2], [2]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_schema(node: Any) -> Any:
    """An OpenAPI 3.0 schema as JSON Schema: ``nullable: true`` becomes a ``"null"`` type or alternative."""
    if isinstance(node, list):
        return [json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: json_schema(value) for key, value in node.items() if key != "nullable"}
    if not node.get("nullable"):
        return out
    if "type" in out:
        return {**out, "type": [out["type"], "null"]}
    shape = {key: out.pop(key) for key in ("allOf", "$ref") if key in out}
    return {**out, "oneOf": [{"type": "null"}, shape]}


def _envelope(kind: str, data: dict[str, Any] | None, required: bool = True) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "type": "object",
        "required": ["type", "data"] if required else ["type"],
        "properties": {"type": {"const": kind}, "data": data if data is not None else {}},
    }
    return payload


def _message(kind: str, summary: str, data: dict[str, Any] | None, versions: list[int], **extra: Any) -> dict:
    return {
        "name": kind,
        "summary": summary,
        "contentType": "application/json",
        "payload": _envelope(kind, data, **extra),
        "x-protocol-versions": versions,
    }


_NUMBER = {"type": "number"}
_CLAIM = {
    "description": "the caller's own user id, repeated (the reference client does); any other id is refused",
    "oneOf": [
        {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
        {"type": "string", "pattern": "^[0-9]{1,19}$"},
        {"type": "object", "properties": {"id": {}}},
        {"type": "null"},
    ],
}
_TRIP_REQUEST = {
    "type": "object",
    "required": ["pick_up_address", "drop_off_address"],
    "properties": {
        "pick_up_address": _ref("Address"),
        "drop_off_address": _ref("Address"),
        "pick_up_location": {"oneOf": [{"type": "null"}, _ref("Point")]},
        "drop_off_location": {"oneOf": [{"type": "null"}, _ref("Point")]},
        "rider": _CLAIM,
        "request_id": {
            "type": ["string", "null"],
            "description": "a UUID the client makes: the same rider repeating it gets the trip it made, not a new one",
        },
    },
}
_TRIP_UPDATE = {
    "type": "object",
    "required": ["id", "status"],
    "properties": {
        "id": {"type": "string", "description": "the trip's id, a UUID"},
        "status": {"type": "string", "enum": list(STATUSES)},
        "driver": _CLAIM,
        "rider": {**_CLAIM, "description": "the rider the driver believes the trip has (checked), or absent"},
    },
}
_FIX = {
    "type": "object",
    "required": ["lat", "lng"],
    "properties": {
        "lat": {**_NUMBER, "minimum": -90, "maximum": 90},
        "lng": {**_NUMBER, "minimum": -180, "maximum": 180},
        "heading": {"type": ["number", "null"], "minimum": 0, "maximum": 360, "description": "degrees from north"},
        "speed": {"type": ["number", "null"], "minimum": 0, "maximum": MAX_SPEED, "description": "metres per second"},
    },
}
_ERROR = {
    "type": "object",
    "required": ["code", "detail"],
    "properties": {
        "code": {
            "type": "string",
            "description": "invalid_json, invalid_message, unknown_type, invalid, forbidden, not_found, "
            "trip_unavailable, invalid_transition, trip_open, unavailable, user_inactive, unauthorized, rate_limited, "
            "internal_error (README)",
        },
        "detail": {"type": "string"},
        "fields": _ref("FieldErrors"),
    },
}

# What a client sends (the server receives) and what the server sends, by message id.
CLIENT_MESSAGES = {
    "echo": _message(ECHO, "Anything; the server sends it back to this socket", None, BOTH, required=False),
    "createTrip": _message(CREATE_TRIP, "A rider requests a trip", _TRIP_REQUEST, BOTH),
    "updateTrip": _message(UPDATE_TRIP, "A driver accepts (STARTED) or advances a trip", _TRIP_UPDATE, BOTH),
    "updateLocation": _message(UPDATE_LOCATION, "A driver's position (coalesced; no reply)", _FIX, V2),
    "updateAvailability": _message(
        UPDATE_AVAILABILITY,
        "A driver switches requests on or off",
        {"type": "object", "required": ["available"], "properties": {"available": {"type": "boolean"}}},
        V2,
    ),
    "authenticate": _message(
        AUTHENTICATE,
        "A newer access token of the same user: a version 2 socket is closed (4001) when its token expires",
        {"type": "object", "required": ["token"], "properties": {"token": {"type": "string"}}},
        V2,
    ),
}
SERVER_MESSAGES = {
    "trip": _message(
        ECHO, "A trip as stored after a change: the reply to its author and the broadcast", _ref("Trip"), BOTH
    ),
    "echoReply": _message(ECHO, "The data of this socket's echo.message, sent back", None, BOTH, required=False),
    "driverLocation": _message(
        DRIVER_LOCATION,
        "The position of the driver of the rider's active trip",
        {"allOf": [_ref("DriverLocation")], "required": ["trip_id"], "properties": {"trip_id": {"type": "string"}}},
        V2,
    ),
    "authenticated": _message(
        AUTHENTICATED,
        "The token was renewed: the socket lives until exp (Unix time)",
        {"type": "object", "required": ["exp"], "properties": {"exp": {"type": "integer"}}},
        V2,
    ),
    "error": _message(ERROR, "A message was refused, or its broadcast failed; the socket stays open", _ERROR, BOTH),
}


CLIENT_MESSAGES["cancelTrip"] = _message(
    CANCEL_TRIP,
    "The rider cancels a REQUESTED or STARTED trip; its driver hands a STARTED one back",
    {
        "type": "object",
        "required": ["id"],
        "properties": {
            "id": {"type": "string", "description": "the trip's id, a UUID"},
            "reason": {
                "type": ["string", "null"],
                "maxLength": MAX_REASON,
                "pattern": _TEXT,
            },
            "version": {
                "description": "cancel only if the trip is still at this version",
                "oneOf": [
                    {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                    {"type": "string", "pattern": "^[0-9]{1,10}$"},
                    {"type": "null"},
                ],
            },
        },
    },
    V2,
)
CLIENT_MESSAGES["resume"] = _message(
    RESUME,
    "After a reconnect: the last version seen of each trip; the server sends what changed, then resume.done",
    {
        "type": "object",
        "properties": {
            "trips": {
                "type": "object",
                "maxProperties": MAX_RESUME_TRIPS,
                "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
            }
        },
    },
    V2,
)
SERVER_MESSAGES["resumeDone"] = _message(
    RESUME_DONE,
    "The answer to resume is complete: how many trips it sent",
    {"type": "object", "required": ["sent"], "properties": {"sent": {"type": "integer", "minimum": 0}}},
    V2,
)
SERVER_MESSAGES["resumeRequired"] = _message(
    RESUME_REQUIRED,
    "Events may have been missed (the broker was away): send resume",
    {"type": "object"},
    V2,
)


def _operation(action: str, message: str) -> dict[str, Any]:
    return {
        "action": action,
        "channel": {"$ref": "#/channels/taxi"},
        "messages": [{"$ref": f"#/channels/taxi/messages/{message}"}],
    }


def build_asyncapi() -> dict[str, Any]:
    """The whole document; a new copy each call."""
    schemas = {name: json_schema(SCHEMAS[name]) for name in ("Trip", "User", "Point", "DriverLocation", "FieldErrors")}
    schemas["Address"] = {"type": "string", "minLength": 1, "maxLength": MAX_ADDRESS, "pattern": _TEXT}
    messages = {**CLIENT_MESSAGES, **SERVER_MESSAGES}
    operations = {f"receive{k[0].upper()}{k[1:]}": _operation("receive", k) for k in CLIENT_MESSAGES}
    operations |= {f"send{k[0].upper()}{k[1:]}": _operation("send", k) for k in SERVER_MESSAGES}
    return copy.deepcopy(
        {
            "asyncapi": "3.0.0",
            "info": {
                "title": "taxi WebSocket",
                "version": __version__,
                "description": 'Trip events over one WebSocket. Every frame is a JSON text `{"type", "data"}`. '
                "The server receives what a client sends and sends the rest. Protocol version 2 (messages marked "
                f"`x-protocol-versions: [2]`) is opt-in: offer the `{V2_SUBPROTOCOL}` subprotocol or add "
                "`protocol=2` to the query string; a version 1 socket only ever receives `echo.message` and `error`.",
            },
            "channels": {
                "taxi": {
                    "address": "/taxi/",
                    "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in messages},
                    "bindings": {
                        "ws": {
                            "query": {
                                "type": "object",
                                "required": ["token"],
                                "properties": {
                                    "token": {"type": "string", "description": "an access token (401 otherwise)"},
                                    "protocol": {"type": "string", "enum": ["1", "2"]},
                                },
                            }
                        }
                    },
                }
            },
            "operations": operations,
            "components": {"messages": messages, "schemas": schemas},
        }
    )
