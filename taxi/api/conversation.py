"""One socket's messages, handled in order: parse, apply the trip rules, answer, publish.

Identity is the token's user; payload ids are only checked. Every failure becomes an ``error`` frame in the
documented shape and the socket stays open, except for a user deactivated since connecting (closed, 1008).
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable

from taxi.domain import COMPLETED, STARTED
from taxi.errors import APIError, AuthenticationFailed, BrokerUnavailable, ServiceUnavailable, ValidationFailed
from taxi.protocol import (
    CREATE_TRIP,
    ECHO,
    UPDATE_AVAILABILITY,
    UPDATE_LOCATION,
    UPDATE_TRIP,
    CreateTrip,
    Echo,
    ProtocolError,
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
from taxi.services.accounts import Caller
from taxi.services.locations import Locations
from taxi.services.presence import Presence
from taxi.services.trip_events import EVERY_DRIVER, Audience, TripEvents
from taxi.services.trips import Trips, require_driver, require_rider

log = logging.getLogger("taxi.socket")

POLICY_VIOLATION = 1008
CLIENT_TYPES = frozenset({ECHO, CREATE_TRIP, UPDATE_TRIP, UPDATE_LOCATION, UPDATE_AVAILABILITY})  # counted by name
UNPARSED = frozenset({"invalid_json", "invalid_message"})  # errors of a frame whose type could not be read
# Who may send which message: checked before the message is parsed, so a wrong role hears "forbidden" first.
ROLE_CHECKS: dict[str, Callable[[Caller], None]] = {
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
            self.reply(error_frame(exc.code, exc.detail))
        except Exception:
            # Our bug, not the client's: say so, keep the socket, and log without the URL (it holds the token).
            log.exception("socket of user %d: a message failed unexpectedly", self.caller.id)
            self.reply(error_frame("internal_error", "The message could not be processed."))

    async def apply(self, command: Echo | CreateTrip | UpdateTrip | UpdateLocation | UpdateAvailability) -> None:
        if isinstance(command, Echo):
            self.reply(frame(ECHO, command.data))
        elif isinstance(command, CreateTrip):
            await self.create_trip(command)
        elif isinstance(command, UpdateTrip):
            await self.update_trip(command)
        elif isinstance(command, UpdateLocation):
            self.locations.fix(self.caller.id, command.fix)  # no reply: a phone sends these every few seconds
        else:
            await self.presence.switch(self.caller.id, command.available)

    async def create_trip(self, command: CreateTrip) -> None:
        trip_id = uuid.uuid4()
        await self.events.before_request(self.session, str(trip_id))
        try:
            trip = await self.trips.request(self.caller, command.form, trip_id)
        except BaseException:
            self.events.request_failed(self.session, str(trip_id))
            raise
        audience: Audience | None
        try:
            audience = await self.presence.audience(command.form.pick_up_location)
            if audience.only:  # its acceptance goes to the same drivers: remember them before any can accept
                await self.presence.store.remember_sent(trip.id, audience.only)
        except BrokerUnavailable as exc:
            log.warning("socket of user %d: no dispatch for trip %s: %s", self.caller.id, trip.id, exc)
            audience = None
        await self.events.requested(self.session, trip.id, self.trips.out(trip), audience)

    async def update_trip(self, command: UpdateTrip) -> None:
        trip = await self.trips.advance(self.caller, command.trip_id, command.status, command.rider_claim)
        reached = EVERY_DRIVER
        if command.status == STARTED:
            self.locations.trip_started(self.caller.id, trip.id)
            if trip.pick_up_location is not None:
                reached = await self._reached(trip.id)
        elif command.status == COMPLETED:
            self.locations.trip_ended(self.caller.id, trip.id)
        await self.events.updated(self.session, trip.id, command.status, await self.trips.out_live(trip), reached)

    async def _reached(self, trip_id: str) -> Audience:
        """The drivers a located request was sent to (they must hear it is taken); nobody if unknown."""
        try:
            return Audience(only=frozenset(await self.presence.store.take_sent(trip_id)))
        except BrokerUnavailable as exc:
            log.warning("trip %s taken, but who heard of it could not be read: %s", trip_id, exc)
            return Audience(only=frozenset())
