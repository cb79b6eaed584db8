"""Input validation and output shapes shared by HTTP and WebSocket handlers. No queries here.

Validators collect every problem into ``{"field": ["message", ...]}`` and raise ``ValidationFailed``
once, the way the reference client expects to display them.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taxi import usernames
from taxi.domain import GROUPS, parse_timestamp
from taxi.errors import ValidationFailed
from taxi.usernames import MAX_USERNAME

MAX_NAME = 150
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # at log-in (sign-up allows 72 bytes, bcrypt's limit)
MAX_TOKEN = 4096
# A typed username may arrive decomposed (longer than its NFKC form, to which the 150 applies).
MAX_LOGIN_USERNAME = 4 * MAX_USERNAME
MAX_ADDRESS = 255

REQUIRED = "This field is required."


@dataclass(frozen=True)
class SignUp:
    username: str
    first_name: str
    last_name: str
    password: str
    group: str


@dataclass(frozen=True)
class TripRequest:
    pick_up_address: str
    drop_off_address: str


class _Errors:
    def __init__(self) -> None:
        self.errors: dict[str, list[str]] = {}

    def add(self, field: str, message: str) -> None:
        self.errors.setdefault(field, []).append(message)

    def raise_if_any(self) -> None:
        if self.errors:
            raise ValidationFailed(self.errors)


def _text(data: Mapping[str, Any], name: str, errors: _Errors, *, required: bool, max_length: int) -> str:
    value = data.get(name)
    if value is None or value == "":
        if required:
            errors.add(name, REQUIRED if value is None else "This field may not be blank.")
        return ""
    if not isinstance(value, str):
        errors.add(name, f"Expected a string, got {type(value).__name__}.")
        return ""
    if "\x00" in value:
        errors.add(name, "Null characters are not allowed.")
        return ""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates, e.g. from a form field in an odd charset
        errors.add(name, "Not valid text (it cannot be encoded as UTF-8).")
        return ""
    if len(value) > max_length:
        errors.add(name, f"Ensure this field has no more than {max_length} characters.")
    return value


def require_object(data: Any) -> Mapping[str, Any]:
    """The body must be a JSON object (or a form); anything else is a 400."""
    if not isinstance(data, Mapping):
        raise ValidationFailed.field(
            "non_field_errors", f"Invalid data. Expected an object, got {type(data).__name__}."
        )
    return data


def parse_sign_up(data: Mapping[str, Any]) -> SignUp:
    errors = _Errors()
    username = _username(data, errors)
    first_name = _text(data, "first_name", errors, required=False, max_length=MAX_NAME)
    last_name = _text(data, "last_name", errors, required=False, max_length=MAX_NAME)
    password1 = _text(data, "password1", errors, required=True, max_length=MAX_PASSWORD)
    password2 = _text(data, "password2", errors, required=True, max_length=MAX_PASSWORD)
    if password1:
        if len(password1) < MIN_PASSWORD:
            errors.add("password1", f"Ensure this field has at least {MIN_PASSWORD} characters.")
        if len(password1.encode("utf-8")) > 72:
            errors.add("password1", "Ensure this field has no more than 72 bytes.")
    group = _text(data, "group", errors, required=True, max_length=10)
    if group and group not in GROUPS:
        errors.add("group", f'"{group}" is not a valid choice: expected "rider" or "driver".')
    if password1 and password2 and password1 != password2 and "password1" not in errors.errors:
        errors.add("non_field_errors", "Passwords must match.")
    errors.raise_if_any()
    return SignUp(username, first_name, last_name, password1, group)


def _username(data: Mapping[str, Any], errors: _Errors) -> str:
    """A new username in its stored (NFKC) form, checked against the rule of ``taxi.usernames``."""
    raw = _text(data, "username", errors, required=True, max_length=MAX_LOGIN_USERNAME)
    if not raw or "username" in errors.errors:
        return raw
    name = usernames.normalize(raw)
    for problem in usernames.problems(name):
        errors.add("username", problem)
    return name


def parse_log_in(data: Mapping[str, Any]) -> tuple[str, str]:
    errors = _Errors()
    username = _text(data, "username", errors, required=True, max_length=MAX_LOGIN_USERNAME)
    password = _text(data, "password", errors, required=True, max_length=MAX_PASSWORD)
    errors.raise_if_any()
    return username, password


def parse_token_field(data: Mapping[str, Any], name: str = "refresh") -> str:
    errors = _Errors()
    token = _text(data, name, errors, required=True, max_length=MAX_TOKEN)
    errors.raise_if_any()
    return token


def parse_trip_request(data: Mapping[str, Any]) -> TripRequest:
    errors = _Errors()
    pick_up = _text(data, "pick_up_address", errors, required=True, max_length=MAX_ADDRESS)
    drop_off = _text(data, "drop_off_address", errors, required=True, max_length=MAX_ADDRESS)
    errors.raise_if_any()
    return TripRequest(pick_up.strip() or pick_up, drop_off.strip() or drop_off)


def parse_trip_id(value: Any, field: str = "id") -> uuid.UUID:
    """A trip id from a URL or a message; ValidationFailed if it is not a UUID."""
    if isinstance(value, str):
        try:
            return uuid.UUID(value)
        except ValueError:
            pass
    raise ValidationFailed.field(field, f"Must be a valid UUID, got {str(value)[:64]!r}.")


def parse_limit(values: list[str], default: int, maximum: int) -> int:
    """``limit`` from every value the query string gave it (blank ones included): none means the default."""
    if not values:
        return default
    if len(values) > 1:
        raise ValidationFailed.field("limit", f"Give one value, got {len(values)}.")
    raw = values[0]
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed.field("limit", f"A valid integer is required, got {raw[:32]!r}.") from None
    if not 1 <= value <= maximum:
        raise ValidationFailed.field("limit", f"Must be between 1 and {maximum}, got {value}.")
    return value


# --- output -----------------------------------------------------------------------------------------


def iso(value: Any) -> str:
    """An ISO-8601 UTC timestamp ending in Z, as Django REST Framework renders them."""
    stamp: dt.datetime = parse_timestamp(value)
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def photo_url(photo: str | None, public_url: str | None) -> str | None:
    if not photo:
        return None
    path = f"/media/{photo}"
    return f"{public_url}{path}" if public_url else path


def user_out(
    id: int, username: str, first_name: str, last_name: str, group: str, photo: str | None, public_url: str | None
) -> dict[str, Any]:
    """The public shape of a user: the sign-up response, and ``rider``/``driver`` inside a trip."""
    return {
        "id": id,
        "username": username,
        "first_name": first_name,
        "last_name": last_name,
        "group": group,
        "photo": photo_url(photo, public_url),
    }
