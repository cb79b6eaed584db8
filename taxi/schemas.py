"""Input validation and output shapes shared by HTTP and WebSocket handlers. No queries here.

Validators collect every problem into ``{"field": ["message", ...]}`` and raise ``ValidationFailed``
once, the way the reference client expects to display them.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from taxi import usernames
from taxi.domain import GROUPS, parse_timestamp
from taxi.errors import ValidationFailed
from taxi.geo import Point
from taxi.usernames import MAX_USERNAME

MAX_NAME = 150
MIN_PASSWORD = 8
MAX_PASSWORD = 1024  # at log-in (sign-up allows 72 bytes, bcrypt's limit)
MAX_TOKEN = 4096
# A typed username may arrive decomposed (longer than its NFKC form, to which the 150 applies).
MAX_LOGIN_USERNAME = 4 * MAX_USERNAME
MAX_ADDRESS = 255
MAX_SPEED = 1000.0  # m/s: no car, but a sane bound for a GPS glitch
MAX_REASON = 255
MAX_RESUME_TRIPS = 500  # trips one resume may list (a phone keeps a screen's worth, not a history)

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
    pick_up_location: Point | None = None
    drop_off_location: Point | None = None
    request_id: uuid.UUID | None = None  # the client's id of this request: a retry finds the trip it made


@dataclass(frozen=True)
class Cancel:
    trip_id: uuid.UUID
    reason: str | None
    if_version: int | None = None  # cancel only if the trip is still at this version (what the client saw)


@dataclass(frozen=True)
class LocationFix:
    """A driver's position as sent: degrees, an optional heading (degrees from north) and speed (m/s)."""

    lat: float
    lng: float
    heading: float | None = None
    speed: float | None = None


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


@dataclass(frozen=True)
class ProfileChange:
    """``PATCH /api/me/``: the names to set; None leaves one as it is."""

    first_name: str | None
    last_name: str | None


PROFILE_FIELDS = ("first_name", "last_name")


def parse_profile(data: Mapping[str, Any]) -> ProfileChange:
    """Only the names can change here; any other field is refused rather than silently ignored."""
    errors = _Errors()
    for name in data:
        if name not in PROFILE_FIELDS:
            errors.add(str(name)[:64], f"Unknown field: only {' and '.join(PROFILE_FIELDS)} can be changed.")
    names = {
        name: _text(data, name, errors, required=False, max_length=MAX_NAME) if name in data else None
        for name in PROFILE_FIELDS
    }
    errors.raise_if_any()
    return ProfileChange(names["first_name"], names["last_name"])


def parse_password(data: Mapping[str, Any]) -> str:
    """``DELETE /api/me/``: the account's password, to confirm."""
    errors = _Errors()
    password = _text(data, "password", errors, required=True, max_length=MAX_PASSWORD)
    errors.raise_if_any()
    return password


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
    pick_up_location = _optional_point(data, "pick_up_location", errors)
    drop_off_location = _optional_point(data, "drop_off_location", errors)
    request_id = None
    if data.get("request_id") is not None:
        try:
            request_id = parse_trip_id(data["request_id"], "request_id")
        except ValidationFailed as exc:
            errors.errors.update(exc.errors)
    errors.raise_if_any()
    return TripRequest(
        pick_up.strip() or pick_up, drop_off.strip() or drop_off, pick_up_location, drop_off_location, request_id
    )


def parse_cancel(data: Mapping[str, Any], trip_id: Any) -> Cancel:
    """A cancellation: the trip's id (from the message or the URL), an optional reason and an optional version
    (a number; from a form, its digits)."""
    errors = _Errors()
    reason = _text(data, "reason", errors, required=False, max_length=MAX_REASON)
    version = data.get("version")
    if isinstance(version, str) and version.isascii() and version.isdigit() and len(version) <= 10:
        version = int(version)
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or not 1 <= version < 2**31):
        errors.add("version", "Must be a trip version (a whole number from 1).")
        version = None
    errors.raise_if_any()
    return Cancel(parse_trip_id(trip_id), reason or None, version)


def parse_resume(data: Mapping[str, Any]) -> dict[uuid.UUID, int]:
    """``{"trips": {"<trip id>": <last version seen>, ...}}``: what a reconnecting client already has."""
    trips = data.get("trips", {})
    if not isinstance(trips, Mapping):
        raise ValidationFailed.field("trips", f"Expected an object of trip id to version, got {type(trips).__name__}.")
    if len(trips) > MAX_RESUME_TRIPS:
        raise ValidationFailed.field("trips", f"List at most {MAX_RESUME_TRIPS} trips, got {len(trips)}.")
    seen: dict[uuid.UUID, int] = {}
    for key, version in trips.items():
        trip_id = parse_trip_id(key, "trips")
        if isinstance(version, bool) or not isinstance(version, int) or not 0 <= version < 2**31:
            raise ValidationFailed.field("trips", f"The version of {key} must be a whole number >= 0.")
        seen[trip_id] = version
    return seen


def _number(data: Mapping[str, Any], name: str, low: float, high: float, errors: _Errors, prefix: str = "") -> float:
    """A finite JSON number in [low, high]; ``prefix`` names the object it belongs to in the message."""
    value = data.get(name)
    if value is None:
        errors.add(prefix or name, f"{prefix and name + ': '}{REQUIRED}")
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float):
        errors.add(prefix or name, f"{prefix and name + ': '}Expected a number, got {type(value).__name__}.")
        return 0.0
    number = float(value)
    if not math.isfinite(number) or not low <= number <= high:
        errors.add(prefix or name, f"{prefix and name + ': '}Must be a number between {low:g} and {high:g}.")
        return 0.0
    return number


def _point(data: Mapping[str, Any], errors: _Errors, prefix: str = "") -> Point:
    return Point(_number(data, "lat", -90, 90, errors, prefix), _number(data, "lng", -180, 180, errors, prefix))


def _optional_point(data: Mapping[str, Any], name: str, errors: _Errors) -> Point | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, Mapping):
        errors.add(name, f'Expected an object {{"lat", "lng"}}, got {type(value).__name__}.')
        return None
    return _point(value, errors, prefix=name)


def parse_location_fix(data: Mapping[str, Any]) -> LocationFix:
    """``update.location``: lat in [-90, 90], lng in [-180, 180], optional heading [0, 360] and speed >= 0."""
    errors = _Errors()
    point = _point(data, errors)
    heading = None if data.get("heading") is None else _number(data, "heading", 0, 360, errors)
    speed = None if data.get("speed") is None else _number(data, "speed", 0, MAX_SPEED, errors)
    errors.raise_if_any()
    return LocationFix(point.lat, point.lng, heading, speed)


def parse_coordinates(lat: list[str], lng: list[str]) -> Point:
    """``?lat=&lng=`` of a query string, each given once."""
    errors = _Errors()
    values: dict[str, Any] = {}
    for name, given in (("lat", lat), ("lng", lng)):
        if len(given) > 1:
            errors.add(name, f"Give one value, got {len(given)}.")
        elif given:
            try:
                values[name] = float(given[0])
            except ValueError:
                errors.add(name, f"Expected a number, got {given[0][:32]!r}.")
    if not errors.errors:
        point = _point(values, errors)
    errors.raise_if_any()
    return point


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


def photo_url(photo: str | None, media_url: str | None) -> str | None:
    """The URL of a stored photo (``photos/<name>``) under ``media_url`` (``Settings.photo_url_base``; None: the
    server's own ``/media``)."""
    if not photo:
        return None
    return f"{media_url or '/media'}/{photo}"


def user_out(
    id: int,
    username: str,
    first_name: str,
    last_name: str,
    group: str,
    photo: str | None,
    photo_thumbnail: str | None = None,
    *,
    media_url: str | None,
    deleted: bool = False,
) -> dict[str, Any]:
    """The public shape of a user: the sign-up response, ``GET /api/me/``, and ``rider``/``driver`` inside a trip.

    A deleted account stays in the trips of the other party, as ``deleted`` with no id, names or photo.
    """
    if deleted:
        return {**DELETED_USER, "group": group}
    return {
        "id": id,
        "username": username,
        "first_name": first_name,
        "last_name": last_name,
        "group": group,
        "photo": photo_url(photo, media_url),
        "photo_thumbnail": photo_url(photo_thumbnail, media_url),
    }


DELETED_USER: dict[str, Any] = {
    "id": None,
    "username": "deleted",
    "first_name": "",
    "last_name": "",
    "photo": None,
    "photo_thumbnail": None,
}
