"""Statements on ``taxi_trip``: the trip reads (with both users joined) and the conditional writes.

Every write also requires its author to be active now, so a socket opened before a deactivation acts no
more. The hot reads are named: PostgreSQL prepares them once per connection and renders the id and the
timestamps itself, exactly as the API writes them.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any, NamedTuple

from taxi import db as dbm
from taxi.domain import STARTED
from taxi.geo import Point
from taxi.paging import START, Keyset
from taxi.queries.rows import select_list, split
from taxi.queries.users import UserRow, load_active, user_columns
from taxi.schemas import TripRequest, iso


class _TripFields(NamedTuple):
    id: Any
    created: Any
    updated: Any
    pick_up_address: str
    drop_off_address: str
    status: str
    pick_up_lat: float | None
    pick_up_lng: float | None
    drop_off_lat: float | None
    drop_off_lng: float | None


@dataclass(frozen=True)
class TripRow:
    """One trip as stored, with its rider and driver (None when there is none)."""

    id: str
    created: str
    updated: str
    pick_up_address: str
    drop_off_address: str
    status: str
    rider: UserRow | None
    driver: UserRow | None
    pick_up_location: Point | None = None
    drop_off_location: Point | None = None

    @property
    def rider_id(self) -> int | None:
        return self.rider.id if self.rider else None

    @property
    def driver_id(self) -> int | None:
        return self.driver.id if self.driver else None


def trip_id_text(value: Any) -> str:
    """The canonical text of a trip id (lower-case, dashed), whatever the backend returned."""
    return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))


_ISO = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_TRIP = {name: f"t.{name}" for name in _TripFields._fields}
# PostgreSQL renders the id and timestamps as the API writes them, sparing Python the conversions.
_TRIP_PG = {**_TRIP, "id": "t.id::text", "created": _ISO.format("t.created"), "updated": _ISO.format("t.updated")}
_JOINS = "LEFT JOIN taxi_user r ON r.id = t.rider_id LEFT JOIN taxi_user d ON d.id = t.driver_id "


def _select(trip_columns: dict[str, str], source: str = "taxi_trip") -> str:
    return (
        f"SELECT {select_list(trip_columns, _TripFields)}, {select_list(user_columns('r'), UserRow)}, "
        f"{select_list(user_columns('d'), UserRow)} FROM {source} t {_JOINS}"
    )


_NEWEST = "ORDER BY t.created DESC, t.id DESC LIMIT {limit}"
# Keyset paging (taxi/paging.py): a page is the rows strictly before ({before_created}, {before_id}) in the list's
# order, read from an index in that order (migration 5), so a deep page costs what the first one does.
_BEFORE = "({alias}created, {alias}id) < ({{before_created}}, {{before_id}})"
# A driver sees the REQUESTED trips it could accept and the trips they drive: a request without a pick-up point,
# or one within {radius} metres of the driver's position ({lat}, {lng}; NULL when it has no fresh one, and then
# no located request matches: the distance of NULL is NULL).
_COULD_ACCEPT = "(pick_up_lat IS NULL OR taxi_distance_m(pick_up_lat, pick_up_lng, {lat}, {lng}) <= {radius})"


def _driver_trips(by_status: bool) -> str:
    """A driver sees every REQUESTED trip it could accept and the trips they drive. One WHERE with an OR would
    join, format and sort every REQUESTED row before the LIMIT; instead each half is read newest first from its own
    index, at most {limit} rows of it after the same keyset (the second half leaves out REQUESTED rows: no trip is
    counted twice), and only those are joined and sorted. Same rows, same order (created, then id, descending).

    With a status filter the requests half runs only when the status is REQUESTED: the condition has no column,
    so PostgreSQL decides it once (a one-time filter) instead of testing every open request.
    """
    requested = "CAST({status} AS VARCHAR(20)) = 'REQUESTED' AND " if by_status else ""
    driven = "status = {status} AND " if by_status else ""
    before = _BEFORE.format(alias="")
    return (
        f"(SELECT * FROM (SELECT * FROM taxi_trip WHERE status = 'REQUESTED' AND {requested}{_COULD_ACCEPT} "
        f"AND {before} ORDER BY created DESC, id DESC LIMIT {{limit}}) open_requests "
        f"UNION ALL SELECT * FROM (SELECT * FROM taxi_trip WHERE driver_id = {{me}} AND status <> 'REQUESTED' "
        f"AND {driven}{before} ORDER BY created DESC, id DESC LIMIT {{limit}}) driven)"
    )


def _visible_to(role: str, by_status: bool) -> tuple[str, str]:
    """(source, WHERE) of the trips a user of ``role`` sees, optionally of one {status}, after the keyset."""
    if role == "driver":
        return _driver_trips(by_status), ""
    status = "AND t.status = {status} " if by_status else ""
    return "taxi_trip", f"WHERE t.rider_id = {{me}} {status}AND {_BEFORE.format(alias='t.')} "


# Each list in two shapes, all statuses or one: separate statements, so each is planned for its own index.
_LISTS = [(role, by_status) for role in ("rider", "driver") for by_status in (False, True)]
_PARAMETER = re.compile(r"\{(me|limit|lat|lng|radius|status|before_created|before_id)\}")


class _Named:
    """A statement whose parameters are named in its text (``{me}``, ``{limit}``, each possibly more than once)."""

    def __init__(self, template: str, name: str) -> None:
        self.order = tuple(_PARAMETER.findall(template))
        self.sql = dbm.SQL(_PARAMETER.sub("{p}", template), name=name)

    def args(self, **values: Any) -> tuple[Any, ...]:
        """The values in the order the text uses them."""
        return tuple(values[name] for name in self.order)


def _list_name(role: str, by_status: bool) -> str:
    return f"taxi_trip_list_{role}{'_status' if by_status else ''}"


class _Reads:
    """The trip reads for one backend's column rendering."""

    def __init__(self, trip_columns: dict[str, str]) -> None:
        self.get = dbm.SQL(_select(trip_columns) + "WHERE t.id = {p}", name="taxi_trip_get")
        self.lists = {
            key: _Named(_select(trip_columns, source) + where + _NEWEST, name=_list_name(*key))
            for key, (source, where) in ((key, _visible_to(*key)) for key in _LISTS)
        }
        # PostgreSQL: the caller's liveness check and their trips in one round trip (LATERAL; SQLite has none):
        # no row at all means the caller is deleted, inactive or not of that role; NULL trip columns, no trips.
        me = f"SELECT {select_list(user_columns('u'), UserRow)}, x.* FROM taxi_user u LEFT JOIN LATERAL ("
        me_end = ") x ON TRUE WHERE u.id = {me} AND u.is_active"
        self.lists_me = {
            key: _Named(
                me
                + _select(trip_columns, source.replace("{me}", "u.id"))
                + where.replace("{me}", "u.id")
                + _NEWEST
                + me_end
                + f" AND u.role = '{key[0]}'",
                name=_list_name(*key) + "_me",
            )
            for key, (source, where) in ((key, _visible_to(*key)) for key in _LISTS)
        }
        self.get_me = dbm.SQL(
            me + _select(trip_columns) + "WHERE t.id = {p}" + me_end.replace("{me}", "{p}"), name="taxi_trip_get_me"
        )


_PG = _Reads(_TRIP_PG)
_SQLITE = _Reads(_TRIP)


def _reads() -> _Reads:
    return _PG if dbm.is_postgresql() else _SQLITE


def _point(lat: float | None, lng: float | None) -> Point | None:
    return None if lat is None or lng is None else Point(lat, lng)


def _trip(fields: _TripFields, rider: UserRow, driver: UserRow) -> TripRow:
    if dbm.is_postgresql():
        trip_id, created, updated = fields.id, fields.created, fields.updated
    else:
        trip_id, created, updated = trip_id_text(fields.id), iso(fields.created), iso(fields.updated)
    return TripRow(
        trip_id,
        created,
        updated,
        fields.pick_up_address,
        fields.drop_off_address,
        fields.status,
        rider if rider.id is not None else None,
        driver if driver.id is not None else None,
        _point(fields.pick_up_lat, fields.pick_up_lng),
        _point(fields.drop_off_lat, fields.drop_off_lng),
    )


def _trip_row(row: Any) -> TripRow:
    return _trip(*split(row, _TripFields, UserRow, UserRow))


def _caller_and_trip(row: Any) -> tuple[UserRow, TripRow | None]:
    caller, fields, rider, driver = split(row, UserRow, _TripFields, UserRow, UserRow)
    return caller, (_trip(fields, rider, driver) if fields.id is not None else None)


async def get(trip_id: uuid.UUID) -> TripRow | None:
    rows = await dbm.fetch_all(_reads().get, (trip_id.hex,))
    return _trip_row(rows[0]) if rows else None


async def search(status: str | None, user_id: int | None, limit: int) -> list[TripRow]:
    """The newest trips for the administration: of any user, or those ``user_id`` rides or drives; of any status,
    or of ``status``."""
    where: list[str] = []
    params: list[Any] = []
    if status is not None:
        where.append("t.status = {p}")
        params.append(status)
    if user_id is not None:
        where.append("(t.rider_id = {p} OR t.driver_id = {p})")
        params += [user_id, user_id]
    columns = _TRIP_PG if dbm.is_postgresql() else _TRIP
    text = _select(columns) + (f"WHERE {' AND '.join(where)} " if where else "") + _NEWEST.replace("{limit}", "{p}")
    return [_trip_row(row) for row in await dbm.fetch_all(dbm.SQL(text), (*params, limit))]


class Reach(NamedTuple):
    """Where a driver is (None: no fresh position) and how far requests reach."""

    lat: float | None
    lng: float | None
    radius: float


NOWHERE = Reach(None, None, 0.0)


def _list_args(
    statement: _Named, user_id: int, limit: int, reach: Reach, status: str | None, before: Keyset
) -> tuple[Any, ...]:
    return statement.args(
        me=user_id,
        limit=limit,
        lat=reach.lat,
        lng=reach.lng,
        radius=reach.radius,
        status=status,
        before_created=dbm.timestamp(before.created),
        before_id=before.id.hex,
    )


async def visible_to(
    user_id: int, role: str, limit: int, reach: Reach = NOWHERE, *, status: str | None = None, before: Keyset = START
) -> list[TripRow]:
    """The newest trips a user of ``role`` may see: a rider's own; a driver's, and the requests it could accept
    from where it is (``reach``). Only trips of ``status`` if given; only those older than ``before``."""
    statement = _reads().lists[role, status is not None]
    values = _list_args(statement, user_id, limit, reach, status, before)
    return [_trip_row(row) for row in await dbm.fetch_all(statement.sql, values)]


async def caller_and_visible(
    user_id: int, role: str, limit: int, reach: Reach = NOWHERE, *, status: str | None = None, before: Keyset = START
) -> tuple[UserRow, list[TripRow]] | None:
    """``visible_to`` and the caller (in one round trip on PostgreSQL); None unless the caller is an active ``role``."""
    if not dbm.is_postgresql():
        caller = await load_active(user_id)
        if caller is None or caller.group != role:
            return None
        return caller, await visible_to(user_id, role, limit, reach, status=status, before=before)
    statement = _reads().lists_me[role, status is not None]
    rows = await dbm.fetch_all(statement.sql, _list_args(statement, user_id, limit, reach, status, before))
    if not rows:
        return None
    pairs = [_caller_and_trip(row) for row in rows]
    return pairs[0][0], [trip for _, trip in pairs if trip is not None]


def list_statement_postgresql(role: str, by_status: bool) -> tuple[str, tuple[str, ...]]:
    """The list statement PostgreSQL runs for ``role`` (with the caller's check), as PREPARE takes it, and the names
    of its parameters in order: for scripts/explain_history, which shows its plans."""
    statement = _PG.lists_me[role, by_status]
    return statement.sql.numbered(), statement.order


async def caller_and_trip(user_id: int, trip_id: uuid.UUID) -> tuple[UserRow, TripRow | None] | None:
    """The active caller and the trip (None if unknown), in one round trip on PostgreSQL; None for an inactive caller."""
    if not dbm.is_postgresql():
        caller = await load_active(user_id)
        return None if caller is None else (caller, await get(trip_id))
    rows = await dbm.fetch_all(_reads().get_me, (trip_id.hex, user_id))
    return _caller_and_trip(rows[0]) if rows else None


_AUTHOR_ACTIVE = "EXISTS (SELECT 1 FROM taxi_user a WHERE a.id = {p} AND a.is_active)"
_RIDER_CLAIM = "({p} IS NULL OR rider_id = {p})"
_INSERT = dbm.SQL(
    "INSERT INTO taxi_trip (id, created, updated, pick_up_address, drop_off_address, status, rider_id, "
    "pick_up_lat, pick_up_lng, drop_off_lat, drop_off_lng) "
    "SELECT {p}, {p}, {p}, {p}, {p}, 'REQUESTED', {p}, {p}, {p}, {p}, {p} WHERE " + _AUTHOR_ACTIVE
)
_ACCEPT = dbm.SQL(
    f"UPDATE taxi_trip SET status = '{STARTED}', driver_id = {{p}}, updated = {{p}} "
    f"WHERE id = {{p}} AND status = 'REQUESTED' AND driver_id IS NULL AND {_RIDER_CLAIM} AND {_AUTHOR_ACTIVE}"
)
_ADVANCE = dbm.SQL(
    "UPDATE taxi_trip SET status = {p}, updated = {p} "
    f"WHERE id = {{p}} AND status = {{p}} AND driver_id = {{p}} AND {_RIDER_CLAIM} AND {_AUTHOR_ACTIVE}"
)
_OPEN_IDS = {
    "rider": dbm.SQL("SELECT id FROM taxi_trip WHERE rider_id = {p} AND status <> 'COMPLETED'"),
    "driver": dbm.SQL("SELECT id FROM taxi_trip WHERE driver_id = {p} AND status <> 'COMPLETED'"),
}


async def insert(trip_id: uuid.UUID, now: dt.datetime, form: TripRequest, rider_id: int) -> bool:
    """Insert a REQUESTED trip; False (nothing written) if the rider is no longer active."""
    stamp = dbm.timestamp(now)
    pick_up, drop_off = form.pick_up_location, form.drop_off_location
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
        rider_id,
    )
    return await dbm.execute(_INSERT, values) == 1


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


async def open_ids(user_id: int, role: str) -> list[str]:
    """Ids of the user's trips that are not COMPLETED."""
    return [trip_id_text(row[0]) for row in await dbm.fetch_all(_OPEN_IDS[role], (user_id,))]


_BUSY = "SELECT DISTINCT driver_id FROM taxi_trip WHERE status IN ('STARTED', 'IN_PROGRESS') AND driver_id IS NOT NULL"
_BUSY_ALL = dbm.SQL(_BUSY, name="taxi_busy_drivers")
_BUSY_AMONG_PG = dbm.SQL(_BUSY + " AND driver_id = ANY({p})", name="taxi_busy_drivers_among")


async def busy_drivers(among: list[int] | None = None) -> set[int]:
    """The drivers (of ``among``, or all) driving a trip that is STARTED or IN_PROGRESS."""
    if among is None:
        rows = await dbm.fetch_all(_BUSY_ALL)
    elif not among:
        return set()
    elif dbm.is_postgresql():
        rows = await dbm.fetch_all(_BUSY_AMONG_PG, (among,))
    else:  # a list parameter is PostgreSQL's; SQLite gets one marker per id
        rows = await dbm.fetch_all(dbm.SQL(_BUSY + f" AND driver_id IN ({', '.join(['{p}'] * len(among))})"), among)
    return {int(row[0]) for row in rows}
