"""Helpers every blueprint uses: the app's services, request bodies, and JSON responses."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from sanic import HTTPResponse

from taxi.api.context import TaxiRequest
from taxi.errors import UnsupportedMediaType, ValidationFailed
from taxi.schemas import require_object

JSON_TYPE = "application/json"
FORM_TYPES = ("multipart/form-data", "application/x-www-form-urlencoded")
ACCEPTED_TYPES = f"{JSON_TYPE}, {FORM_TYPES[0]} or {FORM_TYPES[1]}"


def json_response(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> HTTPResponse:
    """A JSON response serialized with orjson (UUIDs and datetimes included), without touching Sanic's globals."""
    return HTTPResponse(orjson.dumps(body), status=status, headers=dict(headers or {}), content_type="application/json")


def body_of(request: TaxiRequest) -> Mapping[str, Any]:
    """The request body as a mapping: a JSON object, or the first value of each form field.

    A body of any other type (or of none) is a 415, as the reference answers; no body at all is an empty mapping.
    """
    ctype = (request.content_type or "").split(";")[0].strip().lower()
    if ctype in FORM_TYPES:
        form: Mapping[str, list[Any]] = request.form or {}
        if not form and not request.files and request.body:
            raise ValidationFailed.field("non_field_errors", f"Malformed {ctype} body.")
        return {key: values[0] for key, values in form.items() if values}
    if not request.body:
        return {}
    if ctype != JSON_TYPE:
        named = f'Unsupported media type "{ctype}"' if ctype else "No Content-Type"
        raise UnsupportedMediaType(f"{named} in request: send {ACCEPTED_TYPES}.")
    try:
        data = orjson.loads(request.body)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed.field("non_field_errors", f"JSON parse error: {exc.args[0]}") from None
    return require_object(data)
