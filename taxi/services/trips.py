"""Trips: who may see which trip, how a trip is requested, and the one table of status transitions.

Acceptance is a single conditional UPDATE (``status = 'REQUESTED' AND driver_id IS NULL``): the row
count picks exactly one winner however many drivers race. Every later step is also conditional, on
the current status and on ``driver_id`` being the caller, so no read-then-write gap exists anywhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from taxi.domain import CANCELED, COMPLETED, DRIVER, IN_PROGRESS, REQUESTED, RIDER, STARTED, utcnow
from taxi.errors import APIError, BrokerUnavailable, Conflict, NotFound, PermissionDenied, TripOpen
from taxi.paging import START, Keyset
from taxi.queries import trip_writes as w
from taxi.queries import trips as q
from taxi.queries.trips import TripRow
from taxi.schemas import TripRequest, iso
from taxi.services.accounts import Caller, active_user, user_inactive
from taxi.services.presence import Presence
from taxi.services.presence_store import Fix


@dataclass(frozen=True)
class Step:
    """One transition: a driver moves a trip from ``source`` to ``target``."""

    source: str
    target: str


# The transition table, by the status a driver asks for. Only the first step is open to any driver (it is
# the acceptance); every later one belongs to the trip's driver.
STEPS: dict[str, Step] = {
    STARTED: Step(REQUESTED, STARTED),
    IN_PROGRESS: Step(STARTED, IN_PROGRESS),
    COMPLETED: Step(IN_PROGRESS, COMPLETED),
}
NEXT: dict[str, str] = {step.source: step.target for step in STEPS.values()}


ACTIVE = (STARTED, IN_PROGRESS)


@dataclass(frozen=True)
class TripPage:
    """One page of a trip list, and where the next (older) page starts: None when no older trip exists."""

    trips: list[dict[str, Any]]
    next: Keyset | None


def trip_out(trip: TripRow, media_url: str | None, driver_location: Fix | None = None) -> dict[str, Any]:
    """The public shape of a trip, the same over HTTP and the WebSocket.

    ``driver_location``: the driver's last fix, shown while the trip is active (null otherwise).
    """
    return {
        "id": trip.id,
        "created": trip.created,
        "updated": trip.updated,
        "pick_up_address": trip.pick_up_address,
        "drop_off_address": trip.drop_off_address,
        "status": trip.status,
        "driver": trip.driver.public(media_url) if trip.driver else None,
        "rider": trip.rider.public(media_url) if trip.rider else None,
        "pick_up_location": trip.pick_up_location.out() if trip.pick_up_location else None,
        "drop_off_location": trip.drop_off_location.out() if trip.drop_off_location else None,
        "driver_location": driver_location.out() if driver_location and trip.status in ACTIVE else None,
        "version": trip.version,
        "cancel_reason": trip.cancel_reason,
    }


def _what_became_of(trip: dict[str, Any]) -> dict[str, Any]:
    """A trip as every driver saw it when it was a request, with its status now: who rides, who drives and where
    the car is are not for them."""
    return {**trip, "rider": None, "driver": None, "driver_location": None, "cancel_reason": None}


def can_see(caller: Caller, trip: TripRow) -> bool:
    """Riders see their own trips; drivers see every open request and the trips they drive."""
    if caller.group == RIDER:
        return trip.rider_id == caller.id
    return trip.status == REQUESTED or trip.driver_id == caller.id


def refusal(caller: Caller, trip: TripRow | None, status: str, claimed_rider: int | None) -> APIError:
    """Why a driver's conditional UPDATE to ``status`` changed nothing, judged from the trip as stored now."""
    if trip is None or not can_see(caller, trip):
        if trip is not None and status == STARTED and trip.driver_id is not None:
            return Conflict("This trip has already been accepted by another driver.", code="trip_unavailable")
        if trip is not None and status == STARTED and trip.status == CANCELED:
            return Conflict("The rider cancelled this trip.", code="trip_unavailable")
        return NotFound("Not found.")
    if claimed_rider is not None and trip.rider_id != claimed_rider:
        return PermissionDenied("The rider you sent is not this trip's rider.")
    if NEXT.get(trip.status) != status:
        return Conflict(
            f"Cannot change a {trip.status} trip to {status}; the next status is "
            f"{NEXT.get(trip.status, 'none (the trip is over)')}.",
            code="invalid_transition",
        )
    return Conflict("The trip changed meanwhile; fetch it and try again.", code="trip_unavailable")


def cancel_refusal(caller: Caller, trip: TripRow | None, if_version: int | None) -> APIError:
    """Why a cancellation changed nothing, judged from the trip as stored now."""
    mine = trip is not None and (trip.rider_id == caller.id if caller.group == RIDER else trip.driver_id == caller.id)
    if trip is None or not (mine or can_see(caller, trip)):
        return NotFound("Not found.")
    if if_version is not None and trip.version != if_version:
        return Conflict(
            f"The trip changed meanwhile (it is {trip.status} at version {trip.version}); fetch it and decide again.",
            code="trip_unavailable",
        )
    if caller.group == DRIVER and not mine:
        return Conflict("Only the trip's driver can hand it back, and only once accepted.", code="invalid_transition")
    allowed = "REQUESTED or STARTED" if caller.group == RIDER else "STARTED"
    return Conflict(f"Cannot cancel a {trip.status} trip: only a {allowed} one.", code="invalid_transition")


def require_rider(caller: Caller, action: str = "request trips") -> None:
    if caller.group != RIDER:
        raise PermissionDenied(f"Only riders can {action}.", code="forbidden")


def require_driver(caller: Caller, action: str = "update trips") -> None:
    if caller.group != DRIVER:
        raise PermissionDenied(f"Only drivers can {action}.", code="forbidden")


class Trips:
    """Trip operations; ``media_url`` is where photo URLs start. ``presence`` (where drivers are) is
    the worker's, set when it starts."""

    def __init__(self, media_url: str | None, max_open: int = 1) -> None:
        self.media_url = media_url
        self.max_open = max_open  # open trips a rider may hold at once
        self.presence: Presence | None = None

    def out(self, trip: TripRow, driver_location: Fix | None = None) -> dict[str, Any]:
        return trip_out(trip, self.media_url, driver_location)

    async def out_for(self, caller: Caller, trips: list[TripRow]) -> list[dict[str, Any]]:
        """``out_many``, but a trip the caller may no longer see (a request another driver took, or one since
        cancelled) only says what became of it: the request as drivers saw it, its status and version now, and
        null rider, driver, driver location and reason."""
        visible = [t for t in trips if can_see(caller, t)]
        gone = [t for t in trips if not can_see(caller, t)]
        return await self.out_many(visible) + [_what_became_of(self.out(t)) for t in gone]

    async def out_live(self, trip: TripRow) -> dict[str, Any]:
        """``out`` with the driver's current position when the trip is active."""
        return (await self.out_many([trip]))[0]

    async def out_many(self, trips: list[TripRow]) -> list[dict[str, Any]]:
        """``out`` for each trip, with one read of the positions of the drivers of the active ones."""
        drivers = {t.driver_id for t in trips if t.status in ACTIVE and t.driver_id is not None}
        fixes = await self._fixes(drivers)
        return [self.out(t, fixes.get(t.driver_id) if t.driver_id is not None else None) for t in trips]

    async def _fixes(self, drivers: set[int]) -> dict[int, Fix]:
        if not drivers or self.presence is None:
            return {}
        try:
            return await self.presence.fresh_fixes(drivers)
        except BrokerUnavailable:
            return {}  # the trips themselves are still worth answering: without the car's position

    async def reach(self, user_id: int, group: str) -> q.Reach:
        """Where a driver is, for the requests it could accept; nowhere when it has no fresh position."""
        if group != DRIVER or self.presence is None:
            return q.NOWHERE
        fix = (await self._fixes({user_id})).get(user_id)
        return q.Reach(fix.lat, fix.lng, self.presence.radius_m) if fix else q.NOWHERE

    async def list_for_user(
        self, user_id: int, group: str, limit: int, status: str | None = None, before: Keyset = START
    ) -> TripPage:
        """The trips the user may see, newest first, at most ``limit``, of ``status`` if given, older than
        ``before``; 401 for a deleted or inactive user.

        ``group`` is the token's claim: it picks the statement that also checks the caller in the same round
        trip. The stored role decides: if it differs, the list is read again for the stored role.
        """
        # One row more than the page says whether an older page exists.
        found = await q.caller_and_visible(
            user_id, group, limit + 1, await self.reach(user_id, group), status=status, before=before
        )
        if found is not None:
            rows = found[1]
        else:
            caller = await active_user(user_id)
            reach = await self.reach(caller.id, caller.group)
            rows = await q.visible_to(caller.id, caller.group, limit + 1, reach, status=status, before=before)
        after = Keyset.of(rows[limit - 1].created, rows[limit - 1].id) if len(rows) > limit else None
        return TripPage(await self.out_many(rows[:limit]), after)

    async def get_for_user(self, user_id: int, trip_id: uuid.UUID) -> TripRow:
        """The trip if the user may see it (404 alike for unknown and invisible); 401 for an inactive user."""
        found = await q.caller_and_trip(user_id, trip_id)
        if found is None:
            raise user_inactive()
        caller, trip = found
        if trip is None or not can_see(caller, trip):
            raise NotFound("Not found.")
        return trip

    async def open_trip_ids(self, caller: Caller) -> list[str]:
        """Ids of the caller's open trips (the groups a reconnecting socket rejoins)."""
        return await q.open_ids(caller.id, caller.group)

    async def request(
        self, caller: Caller, form: TripRequest, trip_id: uuid.UUID | None = None
    ) -> tuple[TripRow, bool]:
        """A rider requests a trip; it is committed as REQUESTED before this returns. Returns the trip and whether
        it is new: a request whose ``request_id`` made a trip before returns that trip as it is now.

        ``trip_id`` may be chosen by the caller beforehand (to join the trip's group before it exists).
        Errors: ``trip_open`` when the rider holds its limit of open trips; 401 for an inactive rider.
        """
        require_rider(caller)
        trip_id = trip_id or uuid.uuid4()
        for _ in range(2):  # a second try only when the open trip in the way ended meanwhile
            now = utcnow()
            outcome = await w.insert(trip_id, now, form, caller.id, self.max_open)
            if outcome is None:
                raise user_inactive()
            if outcome.created:
                created = iso(now)
                return TripRow(
                    str(trip_id),
                    created,
                    created,
                    form.pick_up_address,
                    form.drop_off_address,
                    REQUESTED,
                    caller,
                    None,
                    form.pick_up_location,
                    form.drop_off_location,
                ), True
            if outcome.existing is not None and (trip := await q.get(uuid.UUID(outcome.existing))) is not None:
                return trip, False
            if outcome.open_trip is not None:
                raise TripOpen(outcome.open_trip)
        raise TripOpen(None)

    async def cancel(
        self, caller: Caller, trip_id: uuid.UUID, reason: str | None = None, if_version: int | None = None
    ) -> TripRow:
        """The rider cancels its REQUESTED or STARTED trip (CANCELED, final), or the trip's driver hands back a
        STARTED one (REQUESTED again, no driver). ``if_version``: only if the trip is still at that version.

        Errors: ``not_found``, ``trip_unavailable`` (it changed since ``if_version``, or was taken),
        ``invalid_transition`` (IN_PROGRESS or finished; a driver's request that is not theirs).
        """
        now = utcnow()
        if caller.group == RIDER:
            changed = await w.cancel(trip_id, caller.id, now, reason, if_version)
        else:
            changed = await w.hand_back(trip_id, caller.id, now, if_version)
        trip = await q.get(trip_id)
        if changed and trip is not None:
            return trip
        await active_user(caller.id)
        raise cancel_refusal(caller, trip, if_version)

    async def resume_state(
        self, caller: Caller, listed: dict[uuid.UUID, int], open_ids: list[str], limit: int
    ) -> list[TripRow]:
        """What a reconnecting client may lack: the listed trips (a rider's own; for a driver any, see ``out_for``),
        the caller's open trips (``open_ids``), and for an available driver the requests it could accept now (at
        most ``limit``)."""
        found = {t.id: t for t in await q.get_many(list(listed)) if caller.group == DRIVER or t.rider_id == caller.id}
        for trip in await q.get_many([uuid.UUID(t) for t in open_ids]):
            found.setdefault(trip.id, trip)
        if caller.group == DRIVER and self.presence is not None and await self.presence.available(caller.id):
            reach = await self.reach(caller.id, caller.group)
            for trip in await q.visible_to(caller.id, DRIVER, limit, reach, status=REQUESTED):
                found.setdefault(trip.id, trip)
        return list(found.values())

    async def advance(
        self, caller: Caller, trip_id: uuid.UUID, status: str, claimed_rider: int | None = None
    ) -> TripRow:
        """Move a trip one step along STEPS on behalf of a driver; return the trip as committed.

        ``claimed_rider`` is the rider id the client believes the trip has: if given, it must be right.
        Errors: ``forbidden`` (not a driver, or a wrong rider), ``not_found`` (unknown or invisible),
        ``trip_unavailable`` (someone else took it first), ``invalid_transition`` (no such step now).
        """
        require_driver(caller)
        step = STEPS.get(status)
        changed = False
        if step is not None and step.source == REQUESTED:
            changed = await w.accept(trip_id, caller.id, utcnow(), claimed_rider)
        elif step is not None:
            changed = await w.advance(trip_id, step.source, step.target, caller.id, utcnow(), claimed_rider)
        trip = await q.get(trip_id)
        if changed and trip is not None:
            return trip
        await active_user(caller.id)  # a deactivated author hears 401 before anything else
        raise refusal(caller, trip, status, claimed_rider)
