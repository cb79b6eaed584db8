"""Trips: who may see which trip, how a trip is requested, and the one table of status transitions.

Acceptance is a single conditional UPDATE (``status = 'REQUESTED' AND driver_id IS NULL``): the row
count picks exactly one winner however many drivers race. Every later step is also conditional, on
the current status and on ``driver_id`` being the caller, so no read-then-write gap exists anywhere.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taxi import db as dbm
from taxi.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from taxi.models import COMPLETED, DRIVER, IN_PROGRESS, REQUESTED, RIDER, STARTED, STATUSES, utcnow
from taxi.schemas import TripRequest, iso, user_out
from taxi.services.accounts import Caller, active_user, user_inactive

# status now -> the status a driver may move it to. Only REQUESTED -> STARTED is open to any driver.
TRANSITIONS: dict[str, str] = {REQUESTED: STARTED, STARTED: IN_PROGRESS, IN_PROGRESS: COMPLETED}

_USER_COLS = "{a}.id, {a}.username, {a}.first_name, {a}.last_name, {a}.role, {a}.photo"
_TRIP_SELECT = (
    "SELECT t.id, t.created, t.updated, t.pick_up_address, t.drop_off_address, t.status, "
    f"{_USER_COLS.format(a='r')}, {_USER_COLS.format(a='d')} "
    "FROM taxi_trip t "
    "LEFT JOIN taxi_user r ON r.id = t.rider_id "
    "LEFT JOIN taxi_user d ON d.id = t.driver_id "
)
_GET = dbm.SQL(_TRIP_SELECT + "WHERE t.id = {p}", name="taxi_trip_get")
_LIST_RIDER = dbm.SQL(
    _TRIP_SELECT + "WHERE t.rider_id = {p} ORDER BY t.created DESC, t.id DESC LIMIT {p}", name="taxi_trip_list_rider"
)
_LIST_DRIVER = dbm.SQL(
    _TRIP_SELECT + "WHERE t.status = 'REQUESTED' OR t.driver_id = {p} ORDER BY t.created DESC, t.id DESC LIMIT {p}",
    name="taxi_trip_list_driver",
)
# PostgreSQL: the caller's liveness check and their trips in one round trip (LATERAL), one statement per role.
# PostgreSQL also renders the id and timestamps exactly as the API writes them, sparing Python the conversions.
_ISO = """to_char({col} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_TRIP_SELECT_PG = _TRIP_SELECT.replace(
    "SELECT t.id, t.created, t.updated,",
    f"SELECT t.id::text, {_ISO.format(col='t.created')}, {_ISO.format(col='t.updated')},",
)
_ME = "SELECT u.username, u.first_name, u.last_name, u.role, u.photo, x.* FROM taxi_user u LEFT JOIN LATERAL ("
_ME_END = ") x ON TRUE WHERE u.id = {p} AND u.is_active"
_LIST_RIDER_ME = dbm.SQL(
    _ME
    + _TRIP_SELECT_PG
    + "WHERE t.rider_id = u.id ORDER BY t.created DESC, t.id DESC LIMIT {p}"
    + _ME_END
    + " AND u.role = 'rider'",
    name="taxi_trip_list_rider_me",
)
_LIST_DRIVER_ME = dbm.SQL(
    _ME + _TRIP_SELECT_PG + "WHERE t.status = 'REQUESTED' OR t.driver_id = u.id ORDER BY t.created DESC, t.id DESC "
    "LIMIT {p}" + _ME_END + " AND u.role = 'driver'",
    name="taxi_trip_list_driver_me",
)
_GET_ME = dbm.SQL(_ME + _TRIP_SELECT_PG + "WHERE t.id = {p}" + _ME_END, name="taxi_trip_get_me")
# Every write also requires its author to be active now: a socket opened before a deactivation acts no more.
_AUTHOR_ACTIVE = "EXISTS (SELECT 1 FROM taxi_user a WHERE a.id = {p} AND a.is_active)"
_INSERT = dbm.SQL(
    "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id) "
    "SELECT {p}, {p}, {p}, {p}, {p}, 'REQUESTED', {p} WHERE " + _AUTHOR_ACTIVE
)
_ACCEPT = dbm.SQL(
    "UPDATE taxi_trip SET status = {p}, driver_id = {p}, updated = {p} "
    "WHERE id = {p} AND status = 'REQUESTED' AND driver_id IS NULL AND ({p} IS NULL OR rider_id = {p}) AND "
    + _AUTHOR_ACTIVE
)
_ADVANCE = dbm.SQL(
    "UPDATE taxi_trip SET status = {p}, updated = {p} "
    "WHERE id = {p} AND status = {p} AND driver_id = {p} AND ({p} IS NULL OR rider_id = {p}) AND " + _AUTHOR_ACTIVE
)
_OPEN_TRIPS_RIDER = dbm.SQL("SELECT id FROM taxi_trip WHERE rider_id = {p} AND status <> 'COMPLETED'")
_OPEN_TRIPS_DRIVER = dbm.SQL("SELECT id FROM taxi_trip WHERE driver_id = {p} AND status <> 'COMPLETED'")


@dataclass(frozen=True)
class TripView:
    """One trip as stored, with the ids needed for visibility checks and its public shape."""

    id: str
    status: str
    rider_id: int | None
    driver_id: int | None
    data: dict[str, Any]


def _user(cols: Sequence[Any], public_url: str | None) -> dict[str, Any] | None:
    if cols[0] is None:
        return None
    return user_out(cols[0], cols[1], cols[2], cols[3], cols[4], cols[5], public_url)


def trip_id_text(value: Any) -> str:
    """The canonical text of a trip id (lower-case, dashed), whatever the backend returned."""
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


def _view(row: Sequence[Any], public_url: str | None, rendered: bool = False) -> TripView:
    """A trip row as a view; ``rendered`` rows already hold the id and timestamps as the API writes them."""
    rider = _user(row[6:12], public_url)
    driver = _user(row[12:18], public_url)
    trip_id = row[0] if rendered else trip_id_text(row[0])
    data = {
        "id": trip_id,
        "created": row[1] if rendered else iso(row[1]),
        "updated": row[2] if rendered else iso(row[2]),
        "pick_up_address": row[3],
        "drop_off_address": row[4],
        "status": row[5],
        "driver": driver,
        "rider": rider,
    }
    return TripView(trip_id, row[5], row[6], row[12], data)


def can_see(caller: Caller, trip: TripView) -> bool:
    """Riders see their own trips; drivers see every open request and the trips they drive."""
    if caller.group == RIDER:
        return trip.rider_id == caller.id
    return trip.status == REQUESTED or trip.driver_id == caller.id


class Trips:
    """Trip operations; ``public_url`` makes photo URLs absolute when set."""

    def __init__(self, public_url: str | None) -> None:
        self.public_url = public_url

    async def list_for(self, caller: Caller, limit: int) -> list[dict[str, Any]]:
        """The trips the caller may see, newest first, at most ``limit``."""
        sql = _LIST_RIDER if caller.group == RIDER else _LIST_DRIVER
        rows = await dbm.fetch_all(sql, (caller.id, limit))
        return [_view(row, self.public_url).data for row in rows]

    async def list_for_user(self, user_id: int, group: str, limit: int) -> list[dict[str, Any]]:
        """``list_for`` by user id, refusing a deleted or inactive user (401) in the same round trip.

        ``group`` is the token's claim; it only picks the statement, the stored role decides.
        """
        if dbm.is_postgresql():
            sql = _LIST_RIDER_ME if group == RIDER else _LIST_DRIVER_ME
            rows = await dbm.fetch_all(sql, (limit, user_id))
            if rows:
                return [_view(row[5:], self.public_url, rendered=True).data for row in rows if row[5] is not None]
        return await self.list_for(await active_user(user_id), limit)

    async def get_for_user(self, user_id: int, trip_id: uuid.UUID) -> TripView:
        """``get_visible`` by user id, refusing a deleted or inactive user (401) in the same round trip."""
        if dbm.is_postgresql():
            rows = await dbm.fetch_all(_GET_ME, (trip_id.hex, user_id))
            if not rows:
                raise user_inactive()
            row = rows[0]
            trip = _view(row[5:], self.public_url, rendered=True) if row[5] is not None else None
            if trip is None or not can_see(Caller(user_id, *row[:5]), trip):
                raise NotFound("Not found.")
            return trip
        return await self.get_visible(await active_user(user_id), trip_id)

    async def fetch(self, trip_id: uuid.UUID) -> TripView | None:
        rows = await dbm.fetch_all(_GET, (trip_id.hex,))
        return _view(rows[0], self.public_url) if rows else None

    async def get_visible(self, caller: Caller, trip_id: uuid.UUID) -> TripView:
        """The trip if the caller may see it; 404 alike for unknown and invisible trips."""
        trip = await self.fetch(trip_id)
        if trip is None or not can_see(caller, trip):
            raise NotFound("Not found.")
        return trip

    async def open_trip_ids(self, caller: Caller) -> list[str]:
        """Ids of the caller's trips that are not COMPLETED (the groups a reconnecting socket rejoins)."""
        sql = _OPEN_TRIPS_RIDER if caller.group == RIDER else _OPEN_TRIPS_DRIVER
        return [trip_id_text(row[0]) for row in await dbm.fetch_all(sql, (caller.id,))]

    async def request(self, caller: Caller, form: TripRequest, trip_id: uuid.UUID | None = None) -> TripView:
        """A rider requests a trip; it is committed as REQUESTED before this returns.

        ``trip_id`` may be chosen by the caller beforehand (to join the trip's group before it exists).
        """
        if caller.group != RIDER:
            raise PermissionDenied("Only riders can request trips.", code="forbidden")
        trip_id = trip_id or uuid.uuid4()
        now = utcnow()
        stamp = dbm.timestamp(now)
        values = (trip_id.hex, stamp, stamp, form.pick_up_address, form.drop_off_address, caller.id, caller.id)
        if await dbm.execute(_INSERT, values) != 1:
            raise user_inactive()
        created = iso(now)
        data = {
            "id": str(trip_id),
            "created": created,
            "updated": created,
            "pick_up_address": form.pick_up_address,
            "drop_off_address": form.drop_off_address,
            "status": REQUESTED,
            "driver": None,
            "rider": caller.public(self.public_url),
        }
        return TripView(str(trip_id), REQUESTED, caller.id, None, data)

    async def advance(
        self, caller: Caller, trip_id: uuid.UUID, status: str, claimed_rider: int | None = None
    ) -> TripView:
        """Move a trip one step along TRANSITIONS on behalf of a driver; return the trip as committed.

        ``claimed_rider`` is the rider id the client believes the trip has: if given, it must be right.
        Errors: ``forbidden`` (not a driver, or a wrong rider), ``not_found`` (unknown or invisible),
        ``trip_unavailable`` (someone else took it first), ``invalid_transition`` (no such step now).
        """
        if caller.group != DRIVER:
            raise PermissionDenied("Only drivers can update trips.", code="forbidden")
        if status not in STATUSES:
            raise ValidationFailed.field("status", f"Must be one of {', '.join(STATUSES)}; got {status!r}.")
        now = utcnow()
        stamp = dbm.timestamp(now)
        if status == STARTED:
            changed = await dbm.execute(
                _ACCEPT, (STARTED, caller.id, stamp, trip_id.hex, claimed_rider, claimed_rider, caller.id)
            )
        else:
            previous = next((k for k, v in TRANSITIONS.items() if v == status), None)
            changed = 0
            if previous is not None:
                changed = await dbm.execute(
                    _ADVANCE,
                    (status, stamp, trip_id.hex, previous, caller.id, claimed_rider, claimed_rider, caller.id),
                )
        trip = await self.fetch(trip_id)
        if changed == 1 and trip is not None:
            return trip
        # The conditional UPDATE refused; say why from what is stored now.
        await active_user(caller.id)
        if trip is None or not (trip.status == REQUESTED or trip.driver_id == caller.id):
            if trip is not None and status == STARTED and trip.driver_id is not None:
                raise Conflict("This trip has already been accepted by another driver.", code="trip_unavailable")
            raise NotFound("Not found.")
        if claimed_rider is not None and trip.rider_id != claimed_rider:
            raise PermissionDenied("The rider you sent is not this trip's rider.")
        if trip.status == COMPLETED or TRANSITIONS.get(trip.status) != status:
            raise Conflict(
                f"Cannot change a {trip.status} trip to {status}; the next status is "
                f"{TRANSITIONS.get(trip.status, 'none (the trip is over)')}.",
                code="invalid_transition",
            )
        raise Conflict("The trip changed meanwhile; fetch it and try again.", code="trip_unavailable")
