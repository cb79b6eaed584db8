"""One socket's messages, handled in order: parse, apply the trip rules, answer, publish.

Identity is the token's user; payload ids are only checked. Every failure becomes an ``error`` frame in the
documented shape and the socket stays open, except for a user deactivated since connecting (closed, 1008).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import Callable

from taxi.domain import FINAL, OPEN, STARTED
from taxi.errors import APIError, AuthenticationFailed, BrokerUnavailable, ServiceUnavailable, ValidationFailed
from taxi.protocol import (
    CREATE_TRIP,
    ECHO,
    RESUME_DONE,
    UPDATE_AVAILABILITY,
    UPDATE_LOCATION,
    UPDATE_TRIP,
    CancelTrip,
    Command,
    CreateTrip,
    Echo,
    ProtocolError,
    Resume,
    UpdateAvailability,
    UpdateLocation,
    UpdateTrip,
    error_frame,
    frame,
    parse_command,
    parse_envelope,
)
from taxi.realtime import Session
from taxi.realtime.meter import NO_METER, Meter
from taxi.services import dispatch
from taxi.services.accounts import Caller
from taxi.services.locations import Locations
from taxi.services.presence import Presence
from taxi.services.trip_events import EVERY_DRIVER, TripEvents
from taxi.services.trips import Trips, require_driver, require_rider

RESUME_REQUESTS = 100  # requests a resuming driver is sent at most (its list's default length)
RESUME_HOLD_S = 2.0

log = logging.getLogger("taxi.socket")

POLICY_VIOLATION = 1008
CLIENT_TYPES = frozenset({ECHO, CREATE_TRIP, UPDATE_TRIP, UPDATE_LOCATION, UPDATE_AVAILABILITY})  # counted by name
UNPARSED = frozenset({"invalid_json", "invalid_message"})  # errors of a frame whose type could not be read
# Who may send which message: checked before the message is parsed, so a wrong role hears "forbidden" first.
ROLE_CHECKS: dict[str, Callable[[Caller], None]] = {  # cancel.trip and resume: either role
    CREATE_TRIP: require_rider,
    UPDATE_TRIP: require_driver,
    UPDATE_LOCATION: functools.partial(require_driver, action="send a location"),
    UPDATE_AVAILABILITY: functools.partial(require_driver, action="change their availability"),
}


class Conversation:
    def __init__(
        self,
        caller: Caller,
        session: Session,
        events: TripEvents[Session],
        trips: Trips,
        presence: Presence,
        locations: Locations,
        *,
        meter: Meter = NO_METER,
    ) -> None:
        self.meter = meter
        self.caller = caller
        self.session = session
        self.events = events
        self.trips = trips
        self.presence = presence
        self.locations = locations

    def reply(self, text: str) -> None:
        self.session.offer(text)

    async def handle(self, raw: str | bytes) -> None:
        try:
            kind, data = parse_envelope(raw)
            self.meter.frame_in(kind)
            if (check := ROLE_CHECKS.get(kind)) is not None:
                check(self.caller)
            await self.apply(parse_command(kind, data, self.caller.id, self.session.version))
        except ProtocolError as exc:
            if exc.code in UNPARSED:
                self.meter.frame_in("other")
            self.reply(error_frame(exc.code, exc.detail))
        except ValidationFailed as exc:
            self.reply(error_frame(exc.code, exc.detail, exc.errors))
        except AuthenticationFailed as exc:
            # The user was deactivated or deleted after connecting: say so, then end the socket.
            self.reply(error_frame(exc.code, exc.detail))
            self.session.close_when_sent(POLICY_VIOLATION, "user not found or inactive")
        except ServiceUnavailable as exc:
            log.warning("socket of user %d: %s", self.caller.id, exc.cause or exc.detail)
            self.reply(error_frame(exc.code, exc.detail))
        except BrokerUnavailable as exc:
            log.warning("socket of user %d: %s", self.caller.id, exc)
            self.reply(error_frame("unavailable", "The service is temporarily unavailable; try again shortly."))
        except APIError as exc:
            self.reply(error_frame(exc.code, exc.detail, extra=exc.extra()))
        except Exception:
            # Our bug, not the client's: say so, keep the socket, and log without the URL (it holds the token).
            log.exception("socket of user %d: a message failed unexpectedly", self.caller.id)
            self.reply(error_frame("internal_error", "The message could not be processed."))

    async def apply(self, command: Command) -> None:
        if isinstance(command, Echo):
            self.reply(frame(ECHO, command.data))
        elif isinstance(command, CreateTrip):
            await self.create_trip(command)
        elif isinstance(command, UpdateTrip):
            await self.update_trip(command)
        elif isinstance(command, UpdateLocation):
            self.locations.fix(self.caller.id, command.fix)  # no reply: a phone sends these every few seconds
        elif isinstance(command, UpdateAvailability):
            await self.presence.switch(self.caller.id, command.available)
        elif isinstance(command, CancelTrip):
            await self.cancel_trip(command)
        else:
            await self.resume(command)

    async def create_trip(self, command: CreateTrip) -> None:
        trip_id = uuid.uuid4()
        await self.events.before_request(self.session, str(trip_id))
        try:
            trip, created = await self.trips.request(self.caller, command.form, trip_id)
        except BaseException:
            self.events.request_failed(self.session, str(trip_id))
            raise
        if not created:  # a retried request: the trip it made, as it is now, to this socket only
            self.events.request_failed(self.session, str(trip_id))
            if trip.status in OPEN:
                await self.events.follow(self.session, [trip.id])
            out = await self.trips.out_live(trip)
            # An answer is owed even if this socket has that version already, but never an older one than it has
            # (a newer one that came meanwhile answers the retry as well).
            self.session.advance(trip.id, trip.version)
            if self.session.seen(trip.id) <= trip.version:
                self.reply(frame(ECHO, out))
            return
        # Its acceptance goes to the drivers it reached: they are remembered before any of them can accept.
        await self.events.requested(self.session, self.trips.out(trip), await dispatch.dispatch(self.presence, trip))

    async def cancel_trip(self, command: CancelTrip) -> None:
        cancel = command.cancel
        out = await dispatch.cancel(
            self.trips, self.events, self.caller, cancel.trip_id, cancel.reason, cancel.if_version, self.session
        )
        self.locations.trip_ended(self.caller.id, out["id"])  # a driver who gave it up sends it no more positions

    async def resume(self, command: Resume) -> None:
        """Send what the client lacks, then ``resume.done``. Its groups are joined and the versions it has noted
        before the trips are read: whatever changes meanwhile arrives live, and per trip only newer versions
        are sent (the session drops the rest, and keeps every key it needs for that a little longer)."""
        session = self.session
        open_ids = await self.trips.open_trip_ids(self.caller)
        keys = len(command.seen) + len(open_ids) + RESUME_REQUESTS
        session.hold(keys)
        try:
            for trip_id, version in command.seen.items():
                session.advance(str(trip_id), version)
            await self.events.follow(session, open_ids)
            trips = await self.trips.resume_state(self.caller, command.seen, open_ids, RESUME_REQUESTS)
            sent = 0
            for out in await self.trips.out_for(self.caller, trips):
                if out["version"] > command.seen.get(uuid.UUID(out["id"]), 0):
                    sent += session.offer(frame(ECHO, out), (out["id"], out["version"]))
            self.reply(frame(RESUME_DONE, {"sent": sent}))
        finally:
            # Live frames read before the trips were may still be on their way: keep their keys a moment longer.
            asyncio.get_running_loop().call_later(RESUME_HOLD_S, session.release, keys)

    async def update_trip(self, command: UpdateTrip) -> None:
        trip = await self.trips.advance(self.caller, command.trip_id, command.status, command.rider_claim)
        reached = EVERY_DRIVER
        if command.status == STARTED:
            self.locations.trip_started(self.caller.id, trip.id)
            if trip.pick_up_location is not None:
                reached = await dispatch.sent_to(self.presence, trip)
        elif command.status in FINAL:
            self.locations.trip_ended(self.caller.id, trip.id)
        await self.events.updated(self.session, await self.trips.out_live(trip), reached)
