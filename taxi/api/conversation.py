"""One socket's messages, handled in order: parse, apply the trip rules, answer, publish.

Identity is the token's user; payload ids are only checked. Every failure becomes an ``error`` frame in the
documented shape and the socket stays open, except for a user deactivated since connecting (closed, 1008) and a
socket that floods (closed, 1008: see taxi/realtime/pace.py). Messages past the socket's rate are not processed.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from taxi.api.socket_token import SocketToken
from taxi.domain import COMPLETED, STARTED
from taxi.errors import APIError, AuthenticationFailed, BrokerUnavailable, ServiceUnavailable, ValidationFailed
from taxi.protocol import (
    AUTHENTICATE,
    AUTHENTICATED,
    CREATE_TRIP,
    ECHO,
    RATE_LIMITED,
    UPDATE_AVAILABILITY,
    UPDATE_LOCATION,
    UPDATE_TRIP,
    Authenticate,
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
from taxi.realtime.pace import MessageLimit, Pace, Verdict
from taxi.services.accounts import Caller
from taxi.services.locations import Locations
from taxi.services.presence import Presence
from taxi.services.trip_events import EVERY_DRIVER, Audience, TripEvents
from taxi.services.trips import Trips, require_driver, require_rider

log = logging.getLogger("taxi.socket")

POLICY_VIOLATION = 1008
# Client message types counted by name in the metrics (others count as "other").
CLIENT_TYPES = frozenset({ECHO, CREATE_TRIP, UPDATE_TRIP, UPDATE_LOCATION, UPDATE_AVAILABILITY, AUTHENTICATE})
# Who may send which message: checked before the message is parsed, so a wrong role hears "forbidden" first.
ROLE_CHECKS: dict[str, Callable[[Caller], None]] = {
    CREATE_TRIP: require_rider,
    UPDATE_TRIP: require_driver,
    UPDATE_LOCATION: functools.partial(require_driver, action="send a location"),
    UPDATE_AVAILABILITY: functools.partial(require_driver, action="change their availability"),
}


class Flooded(Exception):
    """The frame came from a socket closing for flooding: it gets no answer."""


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
        limit: MessageLimit | None = None,
        token: SocketToken | None = None,
    ) -> None:
        self.meter = meter
        self.caller = caller
        self.session = session
        self.events = events
        self.trips = trips
        self.presence = presence
        self.locations = locations
        self.limit = limit
        self.pace: Pace | None = None  # made at the first message: an idle socket holds no rate state
        self.token = token  # version 2 only: the access token the socket is held to

    def reply(self, text: str) -> None:
        self.session.offer(text)

    async def handle(self, raw: str | bytes) -> None:
        try:
            kind, data = self.admit(raw)
            if (check := ROLE_CHECKS.get(kind)) is not None:
                check(self.caller)
            await self.apply(parse_command(kind, data, self.caller.id, self.session.version))
        except Flooded:
            pass  # the socket is being closed for flooding: nothing more is processed or answered
        except ProtocolError as exc:
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

    def admit(self, raw: str | bytes) -> tuple[str, Any]:
        """The envelope of a frame within the socket's message limit. ProtocolError (``rate_limited``) past the
        rate; Flooded once the socket floods. Every frame counts, even one that is not a message."""
        try:
            kind, data = parse_envelope(raw)
        except ProtocolError:
            self.meter.frame_in("other")  # its type could not be read
            self.count(counted=True)
            raise
        self.meter.frame_in(kind)
        self.count(counted=kind != UPDATE_LOCATION)  # fixes are coalesced: only a flood of them counts
        return kind, data

    def count(self, counted: bool) -> None:
        if self.limit is None:
            return
        now = time.monotonic()
        if self.pace is None:
            self.pace = Pace(now)
        verdict = self.limit.check(self.pace, now, counted)
        if verdict is Verdict.ADMIT:
            return
        if verdict is Verdict.REFUSE:
            wait = self.limit.retry_after(self.pace, now)
            raise ProtocolError(
                RATE_LIMITED,
                f"Too many messages: at most {self.limit.per_second} a second (bursts of "
                f"{2 * self.limit.per_second}); this one was not processed. Retry in {wait:.2f} s.",
            )
        if verdict is Verdict.CLOSE:
            log.warning("socket of user %d closed: flooding past %d messages/s", self.caller.id, self.limit.flood)
            detail = f"Over {self.limit.flood} messages a second for {self.limit.flood_seconds} s: closing."
            self.reply(error_frame(RATE_LIMITED, detail))
            self.session.close_when_sent(POLICY_VIOLATION, "message rate too high")
        raise Flooded

    async def apply(
        self, command: Echo | CreateTrip | UpdateTrip | UpdateLocation | UpdateAvailability | Authenticate
    ) -> None:
        if isinstance(command, Echo):
            self.reply(frame(ECHO, command.data))
        elif isinstance(command, CreateTrip):
            await self.create_trip(command)
        elif isinstance(command, UpdateTrip):
            await self.update_trip(command)
        elif isinstance(command, UpdateLocation):
            self.locations.fix(self.caller.id, command.fix)  # no reply: a phone sends these every few seconds
        elif isinstance(command, Authenticate):
            await self.authenticate(command)
        else:
            await self.presence.switch(self.caller.id, command.available)

    async def authenticate(self, command: Authenticate) -> None:
        if self.token is None:  # parse_command admits it on version 2 only, where every socket has a token
            raise ProtocolError("unknown_type", "authenticate is a message of protocol version 2.")
        exp = await self.token.renew(command.token)
        self.reply(frame(AUTHENTICATED, {"exp": exp}))

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
