"""One socket's messages, handled in order: parse, apply the trip rules, answer, publish.

Identity is the token's user; payload ids are only checked. Every failure becomes an ``error`` frame in the
documented shape and the socket stays open, except for a user deactivated since connecting (closed, 1008) and a
socket that floods (closed, 1008: see taxi/realtime/pace.py). Messages past the socket's rate are not processed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from taxi.api.socket_token import SocketToken
from taxi.domain import FINAL, OPEN, STARTED
from taxi.errors import APIError, AuthenticationFailed, BrokerUnavailable, ServiceUnavailable, ValidationFailed
from taxi.protocol import (
    AUTHENTICATE,
    AUTHENTICATED,
    CANCEL_TRIP,
    CREATE_TRIP,
    ECHO,
    RATE_LIMITED,
    RESUME,
    RESUME_DONE,
    UPDATE_AVAILABILITY,
    UPDATE_LOCATION,
    UPDATE_TRIP,
    Authenticate,
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
from taxi.realtime.pace import MessageLimit, Pace, Verdict
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
# Client message types counted by name in the metrics (others count as "other").
CLIENT_TYPES = frozenset(
    {ECHO, CREATE_TRIP, UPDATE_TRIP, UPDATE_LOCATION, UPDATE_AVAILABILITY, AUTHENTICATE, CANCEL_TRIP, RESUME}
)
# Who may send which message: checked before the message is parsed, so a wrong role hears "forbidden" first.
ROLE_CHECKS: dict[str, Callable[[Caller], None]] = {  # cancel.trip and resume: either role
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
            self.reply(error_frame(exc.code, exc.detail, extra=exc.extra()))
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
        elif isinstance(command, Authenticate):
            await self.authenticate(command)
        elif isinstance(command, CancelTrip):
            await self.cancel_trip(command)
        else:
            await self.resume(command)

    async def authenticate(self, command: Authenticate) -> None:
        if self.token is None:  # parse_command admits it on version 2 only, where every socket has a token
            raise ProtocolError("unknown_type", "authenticate is a message of protocol version 2.")
        exp = await self.token.renew(command.token)
        self.reply(frame(AUTHENTICATED, {"exp": exp}))

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
