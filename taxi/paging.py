"""Keyset paging of the trip list: where a page ends, the opaque cursor a client carries that place in, and the
list's query string (``limit``, ``status``, ``cursor``).

A page is the trips strictly older than the last one the previous page showed, in the list's order (``created``,
then ``id``, both descending). Trips that arrive meanwhile are newer than any cursor, so paging on never shows a
trip twice nor skips one. A cursor is signed with the deployment's secret: a client can hold one, not make or
change one, and its format may change without anyone depending on it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import struct
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from taxi.domain import STATUSES, parse_timestamp
from taxi.errors import ValidationFailed
from taxi.schemas import parse_limit

_VERSION = 1
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# version, microseconds since the epoch (signed), the id's 16 bytes; then the first 16 bytes of the HMAC.
_LAYOUT = struct.Struct(">Bq16s")
_MAC_BYTES = 16
_PURPOSE = b"taxi trip list cursor\x00"  # the same secret signs tokens: a cursor must never verify as anything else
_BAD = "Invalid cursor: use the link of a previous page as it was given."


class Keyset(NamedTuple):
    """A place in the list: the (created, id) of a trip. A page holds the trips strictly before it."""

    created: dt.datetime
    id: uuid.UUID

    @classmethod
    def of(cls, created: str | dt.datetime, trip_id: str | uuid.UUID) -> Keyset:
        """The place of a trip as rows and the API carry them (ISO text or datetime, text or UUID)."""
        return cls(parse_timestamp(created), trip_id if isinstance(trip_id, uuid.UUID) else uuid.UUID(trip_id))


# Before every trip: the first page.
START = Keyset(dt.datetime.max.replace(tzinfo=dt.UTC), uuid.UUID(int=(1 << 128) - 1))


def _mac(payload: bytes, secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _PURPOSE + payload, hashlib.sha256).digest()[:_MAC_BYTES]


def encode_cursor(place: Keyset, secret: str) -> str:
    """The opaque, URL-safe text of ``place`` (no padding, no characters a query string must escape)."""
    micros = (place.created - _EPOCH) // dt.timedelta(microseconds=1)
    payload = _LAYOUT.pack(_VERSION, micros, place.id.bytes)
    return base64.urlsafe_b64encode(payload + _mac(payload, secret)).rstrip(b"=").decode("ascii")


def decode_cursor(text: str, secret: str) -> Keyset:
    """The place a cursor of ours names; ValidationFailed on ``cursor`` for anything else (altered, truncated,
    signed by another secret, or not base64 at all)."""
    size = _LAYOUT.size + _MAC_BYTES
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)) if len(text) < 2 * size else b""
    except (binascii.Error, ValueError):
        raw = b""
    payload, mac = raw[: _LAYOUT.size], raw[_LAYOUT.size :]
    # Base64 text has spare bits that decoding ignores: only the one text we issue for these bytes is ours.
    canonical = base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")
    if len(raw) != size or text != canonical or not hmac.compare_digest(mac, _mac(payload, secret)):
        raise ValidationFailed.field("cursor", _BAD)
    version, micros, id_bytes = _LAYOUT.unpack(payload)
    try:
        if version != _VERSION:
            raise ValueError(version)
        return Keyset(_EPOCH + dt.timedelta(microseconds=micros), uuid.UUID(bytes=id_bytes))
    except (ValueError, OverflowError):  # signed by us, so only a cursor of a future format gets here
        raise ValidationFailed.field("cursor", _BAD) from None


class ListQuery(NamedTuple):
    """``GET /api/trip/``'s query: ``limit`` and ``status`` as validated, and where the page starts."""

    limit: int
    status: str | None
    before: Keyset


def _one(values: Sequence[str], field: str) -> str | None:
    if len(values) > 1:
        raise ValidationFailed.field(field, f"Give one value, got {len(values)}.")
    return values[0] if values else None


def parse_status(values: Sequence[str]) -> str | None:
    """``status``: one of the trip statuses, or none for all."""
    value = _one(values, "status")
    if value is not None and value not in STATUSES:
        raise ValidationFailed.field(
            "status", f'"{value[:32]}" is not a valid choice: expected one of {", ".join(STATUSES)}.'
        )
    return value


def _cursor(values: Sequence[str], secret: str) -> Keyset:
    value = _one(values, "cursor")
    return START if value is None else decode_cursor(value, secret)


def parse_list_query(args: Mapping[str, Sequence[str]], default: int, maximum: int, secret: str) -> ListQuery:
    """Every parameter of the list (``args``: each name's values, blank ones included), each given at most once (a blank one is invalid, never the default); one 400
    names every bad parameter."""
    errors: dict[str, list[str]] = {}

    def attempt(parse: Callable[[], Any], fallback: Any) -> Any:
        try:
            return parse()
        except ValidationFailed as exc:
            errors.update(exc.errors)
            return fallback

    limit = attempt(lambda: parse_limit(list(args.get("limit", ())), default, maximum), default)
    status = attempt(lambda: parse_status(args.get("status", ())), None)
    before = attempt(lambda: _cursor(args.get("cursor", ()), secret), START)
    if errors:
        raise ValidationFailed(errors)
    return ListQuery(limit, status, before)
