"""Who hears of a request: when it is made, when it is made again after a hand-back, and when it is cancelled.
Cancelling works the same over the WebSocket and HTTP: the rule is the trip service's, who hears of it is here.

A request reaches the drivers of its audience (nearby dispatch, see ``Presence.audience``); when it names a place
the drivers it was sent to are remembered, since they (and only they) must hear when it is taken or gone.
A rider's cancellation ends the trip: its group hears it (the driver, if any), and so do the drivers a request
that was never accepted had reached. A driver handing back an accepted trip makes it a request again: it goes to
the drivers available near its pick-up now, as a new request does, but not to the driver who gave it up.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from taxi.domain import REQUESTED, RIDER
from taxi.errors import BrokerUnavailable
from taxi.queries.trips import TripRow
from taxi.services.accounts import Caller
from taxi.services.presence import Presence
from taxi.services.trip_events import EVERY_DRIVER, NO_DRIVER, Audience, M, TripEvents
from taxi.services.trips import Trips

log = logging.getLogger("taxi.trips")


async def sent_to(presence: Presence, trip: TripRow) -> Audience:
    """The drivers a request reached, who must hear it is gone: those it was sent to when it had a pick-up point
    (remembered, and forgotten now), else every driver. Nobody if that cannot be read."""
    try:
        if trip.pick_up_location is None:
            return EVERY_DRIVER  # a driver busy now may have heard of it before it was busy
        return Audience(only=frozenset(await presence.store.take_sent(trip.id)))
    except BrokerUnavailable as exc:
        log.warning("trip %s: who heard of the request could not be read: %s", trip.id, exc)
        return NO_DRIVER


async def dispatch(presence: Presence, trip: TripRow, without: int | None = None) -> Audience | None:
    """The audience of a request (None if it cannot be worked out now), remembered when it is a list of drivers.

    ``without``: a driver who just gave the trip up is not sent it, but is remembered: it still holds the trip as
    a request and must hear when it is taken.
    """
    try:
        audience = await presence.audience(trip.pick_up_location)
        if audience.only is None:
            return audience if without is None else Audience(skip=audience.skip | {without})
        gone = frozenset() if without is None else frozenset({without})
        if audience.only | gone:
            await presence.store.remember_sent(trip.id, audience.only | gone)
        return Audience(only=audience.only - gone)
    except BrokerUnavailable as exc:
        log.warning("trip %s: no dispatch: %s", trip.id, exc)
        return None


async def cancel(
    trips: Trips,
    events: TripEvents[M],
    caller: Caller,
    trip_id: uuid.UUID,
    reason: str | None,
    if_version: int | None,
    member: M | None = None,
) -> dict[str, Any]:
    """Cancel (a rider) or hand back (a driver) the trip, tell whoever must hear it, and return it as it is now.

    ``member``: the author's socket, answered directly (None over HTTP: the author gets the trip as the answer).
    """
    trip = await trips.cancel(caller, trip_id, reason, if_version)
    out = await trips.out_live(trip)
    assert trips.presence is not None, "presence starts with the worker"
    if caller.group == RIDER:
        drivers = NO_DRIVER if trip.driver_id is not None else await sent_to(trips.presence, trip)
        await events.changed(member, out, drivers=drivers)
    elif trip.status == REQUESTED:
        again = await dispatch(trips.presence, trip, without=caller.id)
        await events.changed(member, out, drivers=again, leaving=caller.id)
    else:  # handed back, and already taken again: its acceptance told the drivers; the group hears this too
        await events.changed(member, out, leaving=caller.id)
    return out
