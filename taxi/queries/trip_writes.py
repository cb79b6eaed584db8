"""The conditional writes on ``taxi_trip``: a request, each step of a trip, a cancellation.

Each is one statement whose WHERE decides whether it may happen (status, the author's role on the trip, the
author being active now), so its row count is the verdict and racing authors get exactly one winner. Every
change bumps the trip's ``version`` in the same statement.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import NamedTuple

from taxi import db as dbm
from taxi.domain import CANCELED, REQUESTED, STARTED
from taxi.queries.trips import IS_OPEN, trip_id_text
from taxi.queries.users import load_active
from taxi.schemas import TripRequest

_AUTHOR_ACTIVE = "EXISTS (SELECT 1 FROM taxi_user a WHERE a.id = {p} AND a.is_active)"
_RIDER_CLAIM = "({p} IS NULL OR rider_id = {p})"
# A rider's request is written only while the rider is active, holds fewer open trips than the limit, and has not
# made a trip with this request id before. On SQLite the statement is atomic (a writing statement takes the write
# lock before it reads); PostgreSQL runs it after locking the rider's row (see ``insert``).
_INSERT = dbm.SQL(
    "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id, "
    "pick_up_lat, pick_up_lng, drop_off_lat, drop_off_lng, request_id) "
    "SELECT {p}, {p}, {p}, {p}, {p}, 'REQUESTED', {p}, {p}, {p}, {p}, {p}, {p} WHERE " + _AUTHOR_ACTIVE + " "
    f"AND (SELECT count(*) FROM taxi_trip WHERE rider_id = {{p}} AND {IS_OPEN}) < {{p}} "
    "AND NOT EXISTS (SELECT 1 FROM taxi_trip WHERE rider_id = {p} AND request_id = {p})"
)
_LOCK_RIDER = dbm.SQL("SELECT id FROM taxi_user WHERE id = {p} FOR UPDATE")
_BY_REQUEST = dbm.SQL("SELECT id FROM taxi_trip WHERE rider_id = {p} AND request_id = {p}")
_OPEN_OF_RIDER = dbm.SQL(f"SELECT id FROM taxi_trip WHERE rider_id = {{p}} AND {IS_OPEN} ORDER BY created DESC LIMIT 1")
_ACCEPT = dbm.SQL(
    f"UPDATE taxi_trip SET status = '{STARTED}', driver_id = {{p}}, updated = {{p}}, version = version + 1 "
    f"WHERE id = {{p}} AND status = 'REQUESTED' AND driver_id IS NULL AND {_RIDER_CLAIM} AND {_AUTHOR_ACTIVE}"
)
_ADVANCE = dbm.SQL(
    "UPDATE taxi_trip SET status = {p}, updated = {p}, version = version + 1 "
    f"WHERE id = {{p}} AND status = {{p}} AND driver_id = {{p}} AND {_RIDER_CLAIM} AND {_AUTHOR_ACTIVE}"
)
# The rider ends a trip that has not begun; the trip's driver hands back one it has accepted but not begun.
# ({p} IS NULL OR version = {p}): the client may make a cancellation conditional on the version it saw.
_IF_VERSION = "({p} IS NULL OR version = {p})"
_CANCEL = dbm.SQL(
    f"UPDATE taxi_trip SET status = '{CANCELED}', cancel_reason = {{p}}, updated = {{p}}, version = version + 1 "
    f"WHERE id = {{p}} AND rider_id = {{p}} AND status IN ('{REQUESTED}', '{STARTED}') AND {_IF_VERSION} "
    f"AND {_AUTHOR_ACTIVE}"
)
_HAND_BACK = dbm.SQL(
    f"UPDATE taxi_trip SET status = '{REQUESTED}', driver_id = NULL, updated = {{p}}, version = version + 1 "
    f"WHERE id = {{p}} AND driver_id = {{p}} AND status = '{STARTED}' AND {_IF_VERSION} AND {_AUTHOR_ACTIVE}"
)


class Inserted(NamedTuple):
    """What a request wrote: ``created`` (a new trip) or the id of the trip that stands in its way."""

    created: bool
    existing: str | None = None  # the trip of the same request id, if that is why nothing was written
    open_trip: str | None = None  # an open trip of the rider, if the limit is why


async def insert(
    trip_id: uuid.UUID, now: dt.datetime, form: TripRequest, rider_id: int, max_open: int
) -> Inserted | None:
    """Insert a REQUESTED trip unless the rider already holds ``max_open`` open trips or made this request before.

    None (nothing written) if the rider is no longer active. On PostgreSQL the rider's row is locked first, so
    simultaneous requests of one rider count each other's trips.
    """
    stamp = dbm.timestamp(now)
    pick_up, drop_off = form.pick_up_location, form.drop_off_location
    request = form.request_id.hex if form.request_id else None
    values = (
        trip_id.hex,
        stamp,
        stamp,
        form.pick_up_address,
        form.drop_off_address,
        rider_id,
        pick_up.lat if pick_up else None,
        pick_up.lng if pick_up else None,
        drop_off.lat if drop_off else None,
        drop_off.lng if drop_off else None,
        request,
        rider_id,
        rider_id,
        max_open,
        rider_id,
        request,
    )
    if dbm.is_postgresql():
        async with dbm.transaction():
            await dbm.execute(_LOCK_RIDER, (rider_id,))
            written = await dbm.execute(_INSERT, values)
    else:
        written = await dbm.execute(_INSERT, values)
    if written == 1:
        return Inserted(True)
    if await load_active(rider_id) is None:
        return None
    if request is not None and (rows := await dbm.fetch_all(_BY_REQUEST, (rider_id, request))):
        return Inserted(False, existing=trip_id_text(rows[0][0]))
    rows = await dbm.fetch_all(_OPEN_OF_RIDER, (rider_id,))
    # No open trip any more (one ended just now): the caller may simply try again.
    return Inserted(False, open_trip=trip_id_text(rows[0][0]) if rows else None)


async def accept(trip_id: uuid.UUID, driver_id: int, now: dt.datetime, claimed_rider: int | None) -> bool:
    """REQUESTED -> STARTED for ``driver_id``, if nobody has it yet: exactly one of racing drivers gets True."""
    values = (driver_id, dbm.timestamp(now), trip_id.hex, claimed_rider, claimed_rider, driver_id)
    return await dbm.execute(_ACCEPT, values) == 1


async def advance(
    trip_id: uuid.UUID, current: str, target: str, driver_id: int, now: dt.datetime, claimed_rider: int | None
) -> bool:
    """``current`` -> ``target`` if the trip is still ``current`` and ``driver_id`` drives it."""
    values = (target, dbm.timestamp(now), trip_id.hex, current, driver_id, claimed_rider, claimed_rider, driver_id)
    return await dbm.execute(_ADVANCE, values) == 1


async def cancel(
    trip_id: uuid.UUID, rider_id: int, now: dt.datetime, reason: str | None, if_version: int | None = None
) -> bool:
    """REQUESTED or STARTED -> CANCELED, if ``rider_id`` is the trip's rider (and it is at ``if_version``)."""
    values = (reason, dbm.timestamp(now), trip_id.hex, rider_id, if_version, if_version, rider_id)
    return await dbm.execute(_CANCEL, values) == 1


async def hand_back(trip_id: uuid.UUID, driver_id: int, now: dt.datetime, if_version: int | None = None) -> bool:
    """STARTED -> REQUESTED with no driver, if ``driver_id`` drives it (and it is at ``if_version``)."""
    values = (dbm.timestamp(now), trip_id.hex, driver_id, if_version, if_version, driver_id)
    return await dbm.execute(_HAND_BACK, values) == 1
