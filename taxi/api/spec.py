"""The OpenAPI description of the HTTP API, written out so that it states exactly what the handlers accept
and answer (sanic-ext serves it at /docs/openapi.json and renders /docs; its per-route guesses are off)."""

from __future__ import annotations

from typing import Any

from taxi.config import Settings
from taxi.domain import GROUPS, STATUSES
from taxi.schemas import (
    MAX_ADDRESS,
    MAX_LOGIN_USERNAME,
    MAX_NAME,
    MAX_PASSWORD,
    MAX_REASON,
    MAX_TOKEN,
    MAX_USERNAME,
    MIN_PASSWORD,
)
from taxi.security import BCRYPT_MAX_BYTES
from taxi.services.images import ACCEPTED, FORMATS, LONG_SIDE, THUMBNAIL
from taxi.services.presence import NEARBY_LIMIT
from taxi.usernames import PATTERN as USERNAME_PATTERN
from taxi.usernames import RULE as USERNAME_RULE


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_DETAIL = _ref("Detail")
_UNAVAILABLE = _json(_DETAIL, "The database is unavailable; retry shortly (see Retry-After)")
_PHOTO_UNAVAILABLE = {
    **_json(_DETAIL, "The database or the photo store is unavailable; nothing was stored: retry after Retry-After"),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
}
_INVALID = _json(_ref("FieldErrors"), "Invalid input: messages per field, `non_field_errors` for the rest")
_UNAUTHENTICATED = _json(_DETAIL, "Missing, invalid or expired access token, or the user is inactive")
_TOO_LARGE = _json(_DETAIL, "The request body is over the size limit")
_URI_TOO_LONG = _json(_DETAIL, "The request line is over half of the 8 KiB request head limit")
_UNSUPPORTED = _json(_DETAIL, "A body that is not application/json, multipart/form-data or urlencoded form")
_THROTTLED = {
    **_json(_DETAIL, "Too many attempts from this client address (or for this username)"),
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds to wait"}},
}
_BEARER: list[dict[str, list[str]]] = [{"token": []}]

# Every constraint the server checks on a field is published here, so that no request valid under this document
# is refused for a reason it hides. No text may hold a NUL character; a username follows taxi.usernames.
_TEXT = r"^[^\u0000]*$"


def _text(min_length: int, max_length: int, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length, "pattern": _TEXT, **extra}


_SIGN_UP_FIELDS: dict[str, Any] = {
    "username": {
        **_text(1, MAX_USERNAME),
        "pattern": USERNAME_PATTERN,
        "description": f"{USERNAME_RULE} Compared without regard to case; a Cyrillic or Greek name whose every "
        "letter looks like a Latin one is refused. Not taken by another user.",
    },
    "first_name": _text(0, MAX_NAME, nullable=True, description="null is the same as empty"),
    "last_name": _text(0, MAX_NAME, nullable=True, description="null is the same as empty"),
    "password1": _text(MIN_PASSWORD, BCRYPT_MAX_BYTES, description=f"at most {BCRYPT_MAX_BYTES} bytes in UTF-8"),
    "password2": _text(MIN_PASSWORD, BCRYPT_MAX_BYTES, description="equal to password1"),
    "group": {"type": "string", "enum": list(GROUPS)},
}
_SIGN_UP_REQUIRED = ["username", "password1", "password2", "group"]
# The photo part is an image file of one of these types (multipart "encoding"), not any bytes.
_PHOTO_ENCODING = {"photo": {"contentType": ", ".join(ctype for _, ctype in FORMATS.values())}}

SCHEMAS: dict[str, Any] = {
    "Detail": {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}},
    "FieldErrors": {
        "type": "object",
        "minProperties": 1,
        "additionalProperties": {"type": "array", "minItems": 1, "items": {"type": "string"}},
    },
    "User": {
        "type": "object",
        "required": ["id", "username", "first_name", "last_name", "group", "photo", "photo_thumbnail"],
        "properties": {
            "id": {
                "type": "integer",
                "nullable": True,
                "description": "null for a deleted account (in the trips of the other party, as username `deleted`)",
            },
            "username": {"type": "string"},
            "first_name": {"type": "string"},
            "last_name": {"type": "string"},
            "group": {"type": "string", "enum": list(GROUPS)},
            "photo": {
                "type": "string",
                "nullable": True,
                "description": f"URL of the photo (at most {LONG_SIDE} px on its long side), or null",
            },
            "photo_thumbnail": {
                "type": "string",
                "nullable": True,
                "description": f"URL of a {THUMBNAIL} x {THUMBNAIL} square cut from the photo's centre, or null",
            },
        },
    },
    "ProfileChange": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "first_name": _text(0, MAX_NAME, nullable=True, description="null is the same as empty"),
            "last_name": _text(0, MAX_NAME, nullable=True, description="null is the same as empty"),
        },
    },
    "PasswordConfirmation": {
        "type": "object",
        "required": ["password"],
        "properties": {"password": _text(1, MAX_PASSWORD)},
    },
    "Point": {
        "type": "object",
        "required": ["lat", "lng"],
        "properties": {
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lng": {"type": "number", "minimum": -180, "maximum": 180},
        },
    },
    "DriverLocation": {
        "type": "object",
        "required": ["lat", "lng", "heading", "speed", "at"],
        "properties": {
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lng": {"type": "number", "minimum": -180, "maximum": 180},
            "heading": {"type": "number", "minimum": 0, "maximum": 360, "nullable": True},
            "speed": {"type": "number", "minimum": 0, "nullable": True, "description": "metres per second"},
            "at": {"type": "string", "format": "date-time", "description": "when the server received the fix"},
        },
    },
    "NearbyDriver": {
        "type": "object",
        "required": ["lat", "lng", "heading"],
        "properties": {
            "lat": {"type": "number", "description": "rounded to 3 decimals (about 100 m)"},
            "lng": {"type": "number", "description": "rounded to 3 decimals (about 100 m)"},
            "heading": {"type": "number", "nullable": True},
        },
    },
    "Trip": {
        "type": "object",
        "required": [
            "id",
            "created",
            "updated",
            "pick_up_address",
            "drop_off_address",
            "status",
            "driver",
            "rider",
            "pick_up_location",
            "drop_off_location",
            "driver_location",
            "version",
            "cancel_reason",
        ],
        "properties": {
            "id": {"type": "string", "format": "uuid"},
            "created": {"type": "string", "format": "date-time"},
            "updated": {"type": "string", "format": "date-time"},
            "pick_up_address": {"type": "string", "maxLength": MAX_ADDRESS},
            "drop_off_address": {"type": "string", "maxLength": MAX_ADDRESS},
            "status": {"type": "string", "enum": list(STATUSES)},
            "driver": {"allOf": [_ref("User")], "nullable": True},
            "rider": {"allOf": [_ref("User")], "nullable": True},
            "pick_up_location": {"allOf": [_ref("Point")], "nullable": True},
            "drop_off_location": {"allOf": [_ref("Point")], "nullable": True},
            "driver_location": {
                "allOf": [_ref("DriverLocation")],
                "nullable": True,
                "description": "the driver's last position while the trip is STARTED or IN_PROGRESS, else null",
            },
            "version": {
                "type": "integer",
                "minimum": 1,
                "description": "1 when requested, plus 1 on every change: the newer of two copies has the higher",
            },
            "cancel_reason": {
                "type": "string",
                "nullable": True,
                "maxLength": MAX_REASON,
                "description": "the rider's reason, when it cancelled the trip and gave one",
            },
        },
    },
    "Cancel": {
        "type": "object",
        "properties": {
            "reason": _text(0, MAX_REASON),
            "version": {
                "type": "integer",
                "minimum": 1,
                "maximum": 2**31 - 1,
                "description": "cancel only if the trip is still at this version (409 `trip_unavailable` if not)",
            },
        },
    },
    "TokenPair": {
        "type": "object",
        "required": ["access", "refresh"],
        "properties": {"access": {"type": "string"}, "refresh": {"type": "string"}},
    },
    "AccessToken": {
        "type": "object",
        "required": ["access"],
        "properties": {
            "access": {"type": "string"},
            "refresh": {
                "type": "string",
                "description": "with rotation (TAXI_ROTATE_REFRESH_TOKENS, on by default): the refresh token to "
                "use next; the one sent is retired, and presenting it again revokes every refresh token of the user",
            },
        },
    },
    "SignUp": {"type": "object", "required": _SIGN_UP_REQUIRED, "properties": _SIGN_UP_FIELDS},
    "LogIn": {
        "type": "object",
        "required": ["username", "password"],
        "properties": {"username": _text(1, MAX_LOGIN_USERNAME), "password": _text(1, MAX_PASSWORD)},
    },
    "Refresh": {"type": "object", "required": ["refresh"], "properties": {"refresh": _text(1, MAX_TOKEN)}},
}

PATHS: dict[str, Any] = {
    "/api/sign_up/": {
        "post": {
            "tags": ["accounts"],
            "summary": "Create a rider or driver account",
            "operationId": "sign_up",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _ref("SignUp")},
                    "multipart/form-data": {"schema": _ref("SignUpForm"), "encoding": _PHOTO_ENCODING},
                },
            },
            "responses": {
                "201": _json(_ref("User"), "The new user"),
                "400": _INVALID,
                "413": _TOO_LARGE,
                "429": _THROTTLED,
                "503": _PHOTO_UNAVAILABLE,
            },
        }
    },
    "/api/log_in/": {
        "post": {
            "tags": ["accounts"],
            "summary": "Exchange a username and password for an access and a refresh token",
            "operationId": "log_in",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LogIn")}}},
            "responses": {
                "200": _json(_ref("TokenPair"), "Tokens"),
                "400": _INVALID,
                "401": _json(_DETAIL, "Wrong username or password (the same answer for both)"),
                "429": _THROTTLED,
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/token/refresh/": {
        "post": {
            "tags": ["accounts"],
            "summary": "Exchange a refresh token for a new access token (and, with rotation, a new refresh token)",
            "operationId": "refresh",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Refresh")}}},
            "responses": {
                "200": _json(_ref("AccessToken"), "A new access token"),
                "400": _INVALID,
                "401": _json(_DETAIL, "Invalid, expired, revoked or already used refresh token, or an inactive user"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/log_out/": {
        "post": {
            "tags": ["accounts"],
            "summary": "Revoke one of the caller's refresh tokens",
            "operationId": "log_out",
            "security": _BEARER,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Refresh")}}},
            "responses": {
                "204": {"description": "Revoked: that refresh token is refused from now on"},
                "400": _INVALID,
                "401": _UNAUTHENTICATED,
                "403": _json(_DETAIL, "The refresh token belongs to another user"),
                "503": _UNAVAILABLE,
            },
        }
    },
    "/api/me/": {
        "get": {
            "tags": ["accounts"],
            "summary": "The caller's user",
            "operationId": "me",
            "security": _BEARER,
            "responses": {"200": _json(_ref("User"), "The caller"), "401": _UNAUTHENTICATED, "503": _UNAVAILABLE},
        },
        "patch": {
            "tags": ["accounts"],
            "summary": "Change the caller's first and last name (a field left out keeps its value)",
            "description": "Open trips show the new names from now on; any other field is refused.",
            "operationId": "rename",
            "security": _BEARER,
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ProfileChange")}}},
            "responses": {
                "200": _json(_ref("User"), "The caller, renamed"),
                "400": _INVALID,
                "401": _UNAUTHENTICATED,
                "503": _UNAVAILABLE,
            },
        },
        "delete": {
            "tags": ["accounts"],
            "summary": "Delete the caller's account",
            "description": "The password confirms it. The user can no longer log in, every refresh token is revoked, "
            "open sockets are closed (1008), the photo is deleted, the names are cleared and the username is free "
            "again. Trips stay in the other party's history with the user shown as `deleted` (id null).",
            "operationId": "delete_account",
            "security": _BEARER,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("PasswordConfirmation")}},
            },
            "responses": {
                "204": {"description": "Deleted"},
                "400": _INVALID,
                "401": _UNAUTHENTICATED,
                "403": _json(_DETAIL, "Wrong password"),
                "409": _json(_DETAIL, "A trip of the caller's is not finished: finish or cancel it first"),
                "503": _UNAVAILABLE,
            },
        },
    },
    "/media/photos/{name}": {
        "get": {
            "tags": ["media"],
            "summary": "A user's photo, by the name the server gave it",
            "operationId": "photo",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {
                "200": {
                    "description": "The image",
                    "content": {t: {"schema": {"type": "string", "format": "binary"}} for _, t in FORMATS.values()},
                },
                "302": {
                    "description": "With TAXI_MEDIA_STORAGE=s3 (and no TAXI_MEDIA_PUBLIC_URL): the photo is in the "
                    "bucket, at a presigned URL valid TAXI_S3_URL_LIFETIME seconds",
                    "headers": {"Location": {"schema": {"type": "string"}, "description": "the presigned URL"}},
                },
                "404": _json(_DETAIL, "No such photo"),
            },
        }
    },
    "/api/health/": {
        "get": {
            "tags": ["operations"],
            "summary": "Liveness: 200 while this worker serves requests (touches neither database nor Redis)",
            "operationId": "health",
            "responses": {
                "200": _json(
                    {"type": "object", "required": ["status"], "properties": {"status": {"type": "string"}}},
                    "Alive",
                )
            },
        }
    },
}


def _trip_paths(settings: Settings) -> dict[str, Any]:
    return {
        "/api/trip/": {
            "get": {
                "tags": ["trips"],
                "summary": "The trips the caller may see, newest first, a page at a time",
                "description": "A rider sees their own trips; a driver sees the trips they drive and the REQUESTED "
                "trips they could accept: those without a pick-up location, and those whose pick-up is within "
                f"{settings.dispatch_radius_m} m of the driver's fresh position. The body is a bare array; when older "
                'trips exist the response has `Link: <url>; rel="next"` (RFC 8288), the same query with a `cursor` '
                "for the next page. Pages are stable while trips arrive: following the links shows every trip that "
                "was visible when the first page was read exactly once (unless it stopped being visible meanwhile), "
                "and none that arrived later.",
                "operationId": "trip_list",
                "security": _BEARER,
                "parameters": [
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 1, "maximum": settings.trip_list_max},
                        "description": f"at most this many trips (default {settings.trip_list_default})",
                    },
                    {
                        "name": "status",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": list(STATUSES)},
                        "description": "only trips in this status",
                    },
                    {
                        "name": "cursor",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
                        "description": "where the page starts: opaque, taken from the `Link` of the page before (any "
                        "other value is a 400 on `cursor`)",
                    },
                ],
                "responses": {
                    "200": {
                        **_json({"type": "array", "items": _ref("Trip")}, "Trips"),
                        "headers": {
                            "Link": {
                                "schema": {"type": "string"},
                                "description": '`<url>; rel="next"`, present when older trips exist. The url is '
                                "relative to the request's unless TAXI_PUBLIC_URL is set, then absolute under it",
                            }
                        },
                    },
                    "400": _INVALID,
                    "401": _UNAUTHENTICATED,
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/trip/{trip_id}/": {
            "get": {
                "tags": ["trips"],
                "summary": "One trip, if the caller may see it",
                "operationId": "trip_detail",
                "security": _BEARER,
                "parameters": [{"name": "trip_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json(_ref("Trip"), "The trip"),
                    "401": _UNAUTHENTICATED,
                    "404": _json(_DETAIL, "Unknown, invisible or malformed trip id"),
                    "503": _UNAVAILABLE,
                },
            }
        },
        "/api/trip/{trip_id}/cancel/": {
            "post": {
                "tags": ["trips"],
                "summary": "Cancel a trip (its rider), or hand it back (its driver)",
                "description": "The rider may cancel a REQUESTED or STARTED trip: it becomes CANCELED, a final "
                "status, and its driver and the drivers the request reached are told. The trip's driver may hand "
                "back a STARTED trip: it is REQUESTED again with no driver and is dispatched anew. The same as "
                "`cancel.trip` on the WebSocket.",
                "operationId": "trip_cancel",
                "security": _BEARER,
                "parameters": [{"name": "trip_id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("Cancel")}}},
                "responses": {
                    "200": _json(_ref("Trip"), "The trip as it is now"),
                    "400": _INVALID,
                    "401": _UNAUTHENTICATED,
                    "404": _json(_DETAIL, "Unknown, invisible or malformed trip id"),
                    "409": _json(
                        _DETAIL, "`invalid_transition` (IN_PROGRESS or finished) or `trip_unavailable` (changed)"
                    ),
                    "503": _UNAVAILABLE,
                },
            }
        },
    }


def _driver_paths(settings: Settings) -> dict[str, Any]:
    def coordinate(name: str, bound: int) -> dict[str, Any]:
        schema = {"type": "number", "minimum": -bound, "maximum": bound}
        return {"name": name, "in": "query", "required": True, "schema": schema}

    return {
        "/api/drivers/nearby/": {
            "get": {
                "tags": ["trips"],
                "summary": "Available drivers near a point, for a rider's map",
                "description": f"At most {NEARBY_LIMIT} available drivers within {settings.dispatch_radius_m} m, "
                "nearest first, with positions rounded to about 100 m and no identities. Riders only.",
                "operationId": "drivers_nearby",
                "security": _BEARER,
                "parameters": [coordinate("lat", 90), coordinate("lng", 180)],
                "responses": {
                    "200": _json({"type": "array", "items": _ref("NearbyDriver")}, "Drivers, nearest first"),
                    "400": _INVALID,
                    "401": _UNAUTHENTICATED,
                    "403": _json(_DETAIL, "The caller is not a rider"),
                    "503": _UNAVAILABLE,
                },
            }
        }
    }


def _sign_up_form(settings: Settings) -> dict[str, Any]:
    return {
        "type": "object",
        "required": _SIGN_UP_REQUIRED,
        "properties": {
            **_SIGN_UP_FIELDS,
            "photo": {
                "type": "string",
                "format": "binary",
                "minLength": 1,
                "maxLength": settings.max_photo_bytes,
                "description": f"{ACCEPTED}, at most {settings.max_photo_bytes} bytes and "
                f"{settings.max_photo_pixels} pixels; stored re-encoded, without its metadata",
            },
        },
    }


def _photo_paths(settings: Settings) -> dict[str, Any]:
    form = {
        "type": "object",
        "required": ["photo"],
        "properties": {"photo": _sign_up_form(settings)["properties"]["photo"]},
    }
    return {
        "/api/me/photo/": {
            "put": {
                "tags": ["accounts"],
                "summary": "Replace the caller's photo",
                "description": "The new photo and thumbnail are stored before the old ones are deleted; open trips "
                "show the new photo from now on.",
                "operationId": "change_photo",
                "security": _BEARER,
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": form, "encoding": _PHOTO_ENCODING}},
                },
                "responses": {
                    "200": _json(_ref("User"), "The caller, with the new photo"),
                    "400": _INVALID,
                    "401": _UNAUTHENTICATED,
                    "413": _TOO_LARGE,
                    "503": _PHOTO_UNAVAILABLE,
                },
            }
        }
    }


def _with_request_errors(paths: dict[str, Any]) -> dict[str, Any]:
    """Every operation may get a 414 (a request line over the limit); one that reads a body, a 415."""
    out: dict[str, Any] = {}
    for path, item in paths.items():
        out[path] = {}
        for method, operation in item.items():
            extra = {"414": _URI_TOO_LONG, **({"415": _UNSUPPORTED} if "requestBody" in operation else {})}
            out[path][method] = {**operation, "responses": {**operation["responses"], **extra}}
    return out


def build_spec(settings: Settings) -> dict[str, Any]:
    """The description for this deployment, from the constants and settings the handlers check against."""
    return {
        "paths": _with_request_errors(
            {**PATHS, **_photo_paths(settings), **_trip_paths(settings), **_driver_paths(settings)}
        ),
        "components": {"schemas": {**SCHEMAS, "SignUpForm": _sign_up_form(settings)}},
    }
