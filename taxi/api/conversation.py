"""One socket's messages, handled in order: parse, apply the trip rules, answer, publish.

Identity is the token's user; payload ids are only checked. Every failure becomes an ``error`` frame in the
documented shape and the socket stays open, except for a user deactivated since connecting (closed, 1008).
"""

from __future__ import annotations

import logging
import uuid

from taxi.errors import APIError, AuthenticationFailed, ServiceUnavailable, ValidationFailed
from taxi.protocol import (
    CREATE_TRIP,
    ECHO,
    UPDATE_TRIP,
    CreateTrip,
    Echo,
    ProtocolError,
    UpdateTrip,
    error_frame,
    frame,
    parse_command,
    parse_envelope,
)
from taxi.realtime import Session
from taxi.services.accounts import Caller
from taxi.services.trip_events import TripEvents
from taxi.services.trips import Trips, require_driver, require_rider

log = logging.getLogger("taxi.socket")

POLICY_VIOLATION = 1008
# Who may send which message: checked before the message is parsed, so a wrong role hears "forbidden" first.
ROLE_CHECKS = {CREATE_TRIP: require_rider, UPDATE_TRIP: require_driver}


class Conversation:
    def __init__(self, caller: Caller, session: Session, events: TripEvents[Session], trips: Trips) -> None:
        self.caller = caller
        self.session = session
        self.events = events
        self.trips = trips

    def reply(self, text: str) -> None:
        self.session.offer(text)

    async def handle(self, raw: str | bytes) -> None:
        try:
            kind, data = parse_envelope(raw)
            if (check := ROLE_CHECKS.get(kind)) is not None:
                check(self.caller)
            command = parse_command(kind, data, self.caller.id)
            if isinstance(command, Echo):
                self.reply(frame(ECHO, command.data))
            elif isinstance(command, CreateTrip):
                await self.create_trip(command)
            else:
                await self.update_trip(command)
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
        except APIError as exc:
            self.reply(error_frame(exc.code, exc.detail))
        except Exception:
            # Our bug, not the client's: say so, keep the socket, and log without the URL (it holds the token).
            log.exception("socket of user %d: a message failed unexpectedly", self.caller.id)
            self.reply(error_frame("internal_error", "The message could not be processed."))

    async def create_trip(self, command: CreateTrip) -> None:
        trip_id = uuid.uuid4()
        await self.events.before_request(self.session, str(trip_id))
        try:
            trip = await self.trips.request(self.caller, command.form, trip_id)
        except BaseException:
            self.events.request_failed(self.session, str(trip_id))
            raise
        await self.events.requested(self.session, trip.id, self.trips.out(trip))

    async def update_trip(self, command: UpdateTrip) -> None:
        trip = await self.trips.advance(self.caller, command.trip_id, command.status, command.rider_claim)
        await self.events.updated(self.session, trip.id, command.status, self.trips.out(trip))
